"""Pre-flight data check: every list line and every image, all problems reported in one go.

Examples:
    python tools/check_data.py -c configs/my_ssld.yaml --workers 2
    python tools/check_data.py --image-root dataset/fm/images --list dataset/fm/train_list.txt \
        --unlabeled-list dataset/fm/unlabeled_list.txt --class-num 10 --report check.json
Exit status 0 when everything is readable, 1 when a problem was found.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils.config import load_config  # noqa: E402
    from ppssld.utils import cli  # noqa: E402
    from ppssld.data.check import check_dataset, datasets_from_config, format_reports  # noqa: E402
    from ppssld.utils.errors import ConfigError  # noqa: E402
    from ppssld.utils.io import atomic_write_json  # noqa: E402
    from ppssld.utils.logger import setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="Read every listed image once and report all problems.")
    parser.add_argument("-c", "--config", help="YAML config file (PaddleClas schema): checks the datasets of "
                        "DataLoader.Train and DataLoader.Eval (default: none; then give --image-root and lists)")
    cli.override_argument(parser, cli.OVERRIDE_HELP + "; only with --config")
    parser.add_argument("--image-root", help="folder the list paths are relative to (without --config; "
                        "default: none)")
    parser.add_argument("--list", action="append", default=[], help="labeled list file, 'path label' lines "
                        "(repeatable; without --config; default: none)")
    parser.add_argument("--unlabeled-list", action="append", default=[], help="unlabeled list file: one image "
                        "path a line, or PaddleClas's 'path 0' (repeatable; without --config; default: none)")
    parser.add_argument("--class-num", type=int, default=None, help="number of classes: every label must lie in "
                        "[0, CLASS_NUM) (without --config; default: no upper bound)")
    parser.add_argument("--unlabeled-ignore-labels", action="store_true",
                        help="read labels in unlabeled lists as -1 (PaddleClas dummy 0; default: off)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)),
                        help="image-decoding processes (default: the CPU core count, %(default)s here)")
    parser.add_argument("--report", help="also write the report as JSON to this file (default: printed only)")
    parser.add_argument("--max-print", type=int, default=50,
                        help="problems printed per dataset; all are counted and in --report (default 50)")
    return cli.add_debug_flag(parser).parse_args(argv)


def main(argv=None) -> int:
    """Run the checks; print and optionally save the report; return the exit status."""
    args = parse_args(argv)
    setup_logging()
    if args.config:
        targets = datasets_from_config(load_config(args.config, cli.flat_overrides(args.override)))
    elif args.image_root and (args.list or args.unlabeled_list):
        targets = [("lists", {"image_root": args.image_root, "cls_label_path": args.list,
                              "unlabeled_label_path": args.unlabeled_list, "class_num": args.class_num,
                              "unlabeled_ignore_labels": args.unlabeled_ignore_labels})]
    else:
        raise ConfigError("give --config, or --image-root with --list / --unlabeled-list")
    reports = [check_dataset(workers=args.workers, name=name, **keys) for name, keys in targets]
    failed = sum(len(rep["problems"]) for rep in reports)
    print(format_reports(reports, args.max_print, bool(args.report)))
    if args.report:
        atomic_write_json(args.report, {"datasets": reports, "problems": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
