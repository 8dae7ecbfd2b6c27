"""Convert weights: tools/convert_weights.py IN.pdparams OUT.safetensors (or IN.safetensors OUT.pdparams).

A .pdparams is read as data only (ppssld.utils.safe_load); a file that needs more than data
to load is refused unless --trust-weights is given (then paddle.load reads it, running any code
it holds: only for files whose author you trust). Output is written atomically.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils import cli  # noqa: E402  (after the path set-up)
    from ppssld.utils.safetensors_io import convert_weights  # noqa: E402


def main() -> None:
    """Parse, convert, report; a bad file exits 2 with one line (--debug shows the traceback)."""
    parser = cli.add_debug_flag(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("src", help="input weight file, .pdparams or .safetensors (required)")
    parser.add_argument("dst", help="output weight file, .safetensors or .pdparams (the other format; required)")
    parser.add_argument("--trust-weights", action="store_true",
                        help="read IN with paddle.load (runs any code it holds); only for trusted files "
                             "(default: off, IN is read as plain data)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arrays = convert_weights(args.src, args.dst, trust=args.trust_weights)
    print(f"{args.dst}: {len(arrays)} tensors")


if __name__ == "__main__":
    cli.run(main)
