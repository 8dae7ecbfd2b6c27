"""Prepare a ready-to-train dataset offline: images + PaddleClas label lists.

Examples:
    python tools/prepare_data.py --dataset fashion_mnist --out dataset/fashion_mnist
    python tools/prepare_data.py --dataset digits --out dataset/digits --labeled 200 --unlabeled 1000 --seed 0
    python tools/prepare_data.py --dataset cifar10 --src ~/cifar-10-batches-py --out dataset/cifar10
    python tools/prepare_data.py --dataset imagefolder --src ~/photos --out dataset/photos
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.data.prepare import DATASETS, format_summary, prepare_dataset  # noqa: E402
    from ppssld.utils import cli  # noqa: E402
    from ppssld.utils.logger import setup_logging  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="Write a ready-to-train dataset (images/, train_list.txt, "
                                     "val_list.txt, label_list.txt, unlabeled_list.txt) into --out.")
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="dataset to write (required)")
    parser.add_argument("--out", required=True, help="output folder; a previous images/ there is replaced (required)")
    parser.add_argument("--src", default=None, help="source folder (fashion_mnist default: "
                        "/usr/share/datasets/fashion-mnist; needed for cifar10, cifar100, imagefolder)")
    parser.add_argument("--labeled", type=int, default=None, help="labeled training images in total, spread "
                        "evenly over the classes (default: every training image not made unlabeled)")
    parser.add_argument("--unlabeled", type=int, default=None, help="training images listed without labels in "
                        "unlabeled_list.txt (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the labeled/unlabeled split (default 0)")
    return cli.add_debug_flag(parser).parse_args(argv)


def main(argv=None) -> int:
    """Prepare, print the per-class summary; return the exit status."""
    args = parse_args(argv)
    setup_logging()
    summary = prepare_dataset(args.dataset, args.out, src=args.src, labeled=args.labeled,
                              unlabeled=args.unlabeled, seed=args.seed)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    cli.run(main)
