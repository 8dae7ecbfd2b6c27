"""Mining throughput vs the teacher's bare inference throughput, same images, same batch size.

Bare inference: read each file, decode, eval transforms, forward, softmax; nothing else.
Mining: :func:`ppssld.mining.score.score_pool` (the same plus top-N, de-duplication
signature, chunk files, prefetch). Rounds alternate bare / mining / mining without prefetch; best and median
of each are compared. Writes benchmark/results/mining_throughput.json and .md.

Usage: python benchmark/mining_throughput.py --data DIR [--images 2000 --batch-size 64]
       [--backbone ResNet18 --weights W.pdparams]   (DIR from tools/prepare_data.py / prepare_dataset)
"""
import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ppssld  # noqa: E402,F401
import paddle  # noqa: E402

from ppssld.arch.zoo import build_backbone  # noqa: E402
from ppssld.data.label_list import read_label_list  # noqa: E402
from ppssld.data.image import load_and_transform  # noqa: E402
from ppssld.data.transforms import build_transforms  # noqa: E402
from ppssld.mining.score import score_pool  # noqa: E402
from ppssld.mining.teacher import Teacher, teacher_from_weights  # noqa: E402
from ppssld.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 32}},
       {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.286] * 3, "std": [0.353] * 3, "order": ""}},
       {"ToCHWImage": None}]


def bare(teacher: Teacher, paths, root: str, transform, batch_size: int) -> float:
    """Images per second of the plain read-decode-transform-forward loop."""
    start = time.perf_counter()
    for s in range(0, len(paths), batch_size):
        teacher(np.stack([load_and_transform(os.path.join(root, p), transform) for p in paths[s:s + batch_size]]))
    return len(paths) / (time.perf_counter() - start)


def mining(teacher: Teacher, paths, root: str, transform, batch_size: int, chunk: int, prefetch: bool) -> float:
    """Images per second of score_pool (fresh output folder)."""
    out = tempfile.mkdtemp(prefix="mining_bench_")
    try:
        start = time.perf_counter()
        score_pool(teacher, paths, root, transform, out, batch_size=batch_size, chunk_size=chunk, prefetch=prefetch)
        return len(paths) / (time.perf_counter() - start)
    finally:
        shutil.rmtree(out)


def main() -> None:
    """Run the comparison and write the results files."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--backbone", default="ResNet18")
    ap.add_argument("--weights")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmark/results/mining_throughput")
    args = ap.parse_args()
    root = os.path.join(args.data, "images")
    paths = [r.path for r in read_label_list(os.path.join(args.data, "unlabeled_list.txt"), unlabeled=True)]
    paths = paths[:args.images]
    if args.weights:
        teacher = teacher_from_weights(args.backbone, args.weights, 10)
    else:
        paddle.seed(0)
        teacher = Teacher(build_backbone(args.backbone, class_num=10), f"{args.backbone} (random init)")
    transform = build_transforms(OPS)
    bare(teacher, paths[:128], root, transform, args.batch_size)  # warm-up
    runs = {"bare": [], "mining": [], "mining_no_prefetch": []}
    for _ in range(args.rounds):
        runs["bare"].append(bare(teacher, paths, root, transform, args.batch_size))
        runs["mining"].append(mining(teacher, paths, root, transform, args.batch_size, args.chunk_size, True))
        runs["mining_no_prefetch"].append(mining(teacher, paths, root, transform, args.batch_size,
                                                 args.chunk_size, False))
        print({k: [round(v, 1) for v in vs] for k, vs in runs.items()}, flush=True)
    ratio = max(runs["mining"]) / max(runs["bare"])
    ratio_median = float(np.median(runs["mining"]) / np.median(runs["bare"]))
    ratio_sync = max(runs["mining_no_prefetch"]) / max(runs["bare"])
    result = {"teacher": teacher.description, "images": len(paths), "batch_size": args.batch_size,
              "chunk_size": args.chunk_size, "input": "Fashion-MNIST 28x28 PNG -> 32x32",
              "bare_img_per_s": [round(v, 1) for v in runs["bare"]],
              "mining_img_per_s": [round(v, 1) for v in runs["mining"]], "ratio_best": round(ratio, 3),
              "ratio_median": round(ratio_median, 3),
              "mining_no_prefetch_img_per_s": [round(v, 1) for v in runs["mining_no_prefetch"]],
              "ratio_best_no_prefetch": round(ratio_sync, 3),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus (shared), paddle "
                         f"{paddle.__version__} CPU",
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python " + " ".join(sys.argv)}
    atomic_write_json(args.out + ".json", result)
    atomic_write_text(args.out + ".md", "\n".join([
        "# Mining throughput vs bare teacher inference\n", f"{result['date']}, {result['machine']}, "
        f"OMP_NUM_THREADS={result['omp_num_threads']}\n", f"Command: `{result['command']}`\n",
        f"Teacher {result['teacher']}, {len(paths)} images ({result['input']}), batch {args.batch_size}, "
        f"chunk {args.chunk_size}. Rounds alternate bare / mining / mining without prefetch.\n",
        "| loop | img/s per round |", "|---|---|",
        f"| bare inference (read, decode, transform, forward) | {result['bare_img_per_s']} |",
        f"| mining (score_pool: + top-N, dedup signature, chunk files, prefetch) | {result['mining_img_per_s']} |",
        f"| mining without prefetch thread | {result['mining_no_prefetch_img_per_s']} |",
        "", f"Ratio mining / bare: best of each **{result['ratio_best']}**, median of each "
        f"{result['ratio_median']}, without prefetch (best) {result['ratio_best_no_prefetch']} (target >= 0.9).",
        "", "The machine is 2 CPU cores shared with other jobs: single runs of the *same* loop vary by up to "
        "~40%, so read the ratio with that noise in mind."]) + "\n")


if __name__ == "__main__":
    main()
