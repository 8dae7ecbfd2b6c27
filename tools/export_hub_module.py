"""Write a PaddleHub module from an exported folder.

tools/export_hub_module.py --model_dir inference/MobileNetV3_small_x0_35_ssld_infer --name mv3_ssld --out hub_modules
then: hub install hub_modules/mv3_ssld   or   hub.Module(directory="hub_modules/mv3_ssld")
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils import cli  # noqa: E402  (after the path set-up)
    from ppssld.export.hub import MODULE_VERSION, write_hub_module  # noqa: E402  (after the path set-up)
    from ppssld.utils.logger import setup_logging  # noqa: E402


def main() -> None:
    """Parse arguments and write the module folder."""
    parser = argparse.ArgumentParser(description="Write a PaddleHub module for an exported _ssld_infer folder")
    parser.add_argument("--model_dir", required=True, help="exported _ssld_infer folder holding inference.json, "
                        ".pdiparams and .yml (required)")
    parser.add_argument("--name", required=True, help="module name, a Python identifier (required)")
    parser.add_argument("--out", required=True, help="parent folder; the module is written to OUT/NAME/ (required)")
    parser.add_argument("--version", default=MODULE_VERSION, help="module version string (default %(default)s)")
    parser.add_argument("--summary", default=None, help="one-line description (default: '<model> image classifier "
                        "(<N> classes), exported by ppssld', from inference.yml)")
    args = cli.add_debug_flag(parser).parse_args()
    setup_logging()
    path = write_hub_module(args.model_dir, args.name, args.out, version=args.version, summary=args.summary)
    print(f"PaddleHub module: {path}")


if __name__ == "__main__":
    cli.run(main)
