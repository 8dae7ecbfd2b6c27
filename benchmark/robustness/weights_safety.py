"""Time safe loading (allow-listed unpickler) against ``paddle.load`` on a ResNet50_vd state dict.

Builds ResNet50_vd from the zoo with random initialisation (1000 classes), saves its state dict once
with ``paddle.save`` (and a ``.safetensors`` twin), then times ``paddle.load``, ``safe_load`` and the
safetensors read interleaved (the order rotates every round, so drift and cache effects hit all
alike) and reports medians. Both return Paddle tensors; the results are checked equal first.

    flock /tmp/ppssld-heavy.lock python benchmark/robustness/weights_safety.py --repeats 15
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark.common import results_dir, write_results  # noqa: E402

import paddle  # noqa: E402

from ppssld.arch.zoo import build_backbone  # noqa: E402
from ppssld.utils.safe_load import safe_load  # noqa: E402
from ppssld.utils.safetensors_io import save_safetensors  # noqa: E402

logger = logging.getLogger("ppssld.benchmark.weights_safety")

TARGET = 1.2  # safe_load may take at most this many times paddle.load


def make_file(folder: str, backbone: str) -> Dict[str, str]:
    """Save a randomly initialised ``backbone`` state dict as .pdparams and .safetensors."""
    paddle.seed(0)
    layer = build_backbone(backbone, class_num=1000)
    paths = {"pdparams": os.path.join(folder, f"{backbone}.pdparams"),
             "safetensors": os.path.join(folder, f"{backbone}.safetensors")}
    paddle.save(layer.state_dict(), paths["pdparams"])
    save_safetensors(layer.state_dict(), paths["safetensors"])
    return paths


def check_equal(paths: Dict[str, str]) -> int:
    """Every loader returns the same tensors; returns the tensor count."""
    ref = paddle.load(paths["pdparams"])
    for other in (safe_load(paths["pdparams"]), safe_load(paths["safetensors"])):
        assert sorted(other) == sorted(ref)
        for key, value in ref.items():
            assert np.array_equal(other[key].numpy(), value.numpy()), key
    return len(ref)


def time_interleaved(loaders: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, List[float]]:
    """Run every loader once per round, rotating the order; seconds per call."""
    names = list(loaders)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for name in names:  # warm-up (imports, page cache)
        loaders[name]()
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            loaders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    """Parse, build the file, check, time, write results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ResNet50_vd")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="ppssld-safe-load-") as folder:
        paths = make_file(folder, args.backbone)
        size_mb = os.path.getsize(paths["pdparams"]) / 2 ** 20
        tensors = check_equal(paths)
        times = time_interleaved({"paddle.load": lambda: paddle.load(paths["pdparams"]),
                                  "safe_load (.pdparams)": lambda: safe_load(paths["pdparams"]),
                                  "safe_load (.safetensors)": lambda: safe_load(paths["safetensors"])},
                                 args.repeats)
    med = {n: statistics.median(t) for n, t in times.items()}
    base = med["paddle.load"]
    ratio = med["safe_load (.pdparams)"] / base
    rows = "\n".join(f"| {n} | {med[n] * 1e3:.1f} | {min(t) * 1e3:.1f} | {max(t) * 1e3:.1f} | {med[n] / base:.2f}x |"
                     for n, t in times.items())
    verdict = "within" if ratio <= TARGET else "OVER"
    markdown = (f"# Safe loading vs paddle.load ({args.backbone}, {tensors} tensors, {size_mb:.1f} MiB)\n\n"
                f"Random-init {args.backbone} state dict (1000 classes) saved once with `paddle.save`; the three "
                f"loaders run interleaved (order rotating each round), {args.repeats} timed rounds after one "
                f"warm-up; all return Paddle tensors and were checked equal. The 2 cores are shared with other "
                f"jobs: expect noise.\n\n"
                f"| loader | median ms | min ms | max ms | vs paddle.load |\n|---|---:|---:|---:|---:|\n{rows}\n\n"
                f"safe_load / paddle.load = **{ratio:.2f}x** (target <= {TARGET}x: {verdict}).\n")
    payload = {"backbone": args.backbone, "tensors": tensors, "file_mib": round(size_mb, 1), "repeats": args.repeats,
               "median_s": med, "times_s": times, "ratio_safe_vs_paddle": round(ratio, 3), "target": TARGET}
    write_results("weights_safety", payload, markdown, results_dir(__file__))
    print(markdown)


if __name__ == "__main__":
    main()
