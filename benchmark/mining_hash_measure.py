"""Measure perceptual hashes on Fashion-MNIST: planted duplicates vs distinct images.

Eval set = the first ``--eval`` test images. Planted = every kind of
:mod:`ppssld.mining.planted` applied to ``--planted`` eval images. Distinct = the first
``--distinct`` training images (different photos; the dataset's own near-twins included).
For each hash: distance of each planted copy to its source, and distance of each distinct
image to its nearest eval image. Then, for the chosen hash and threshold, the pixel
similarity of the planted pairs and of the distinct hash matches.

Usage: python benchmark/mining_hash_measure.py [--eval 2000 --planted 200 --distinct 5000]
Writes benchmark/results/mining_hash_measure.json and .md.
"""
import argparse
import datetime
import gzip
import os
import platform
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.mining import dedup  # noqa: E402
from ppssld.mining.planted import VARIANTS, plant  # noqa: E402
from ppssld.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

ROOT = "/usr/share/datasets/fashion-mnist"
HASHES = [("phash", 8), ("dhash", 8), ("ahash", 8), ("whash", 8), ("phash", 16)]


def read_idx(name: str) -> np.ndarray:
    """Read an IDX .gz file (images -> (n,28,28) uint8, labels -> (n,))."""
    with gzip.open(os.path.join(ROOT, name)) as handle:
        data = handle.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main() -> None:
    """Run the measurement and write the results files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=int, default=2000)
    parser.add_argument("--planted", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=5000)
    parser.add_argument("--out", default="benchmark/results/mining_hash_measure")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x_te, y_te = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    x_tr, y_tr = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    evals = [Image.fromarray(a) for a in x_te[:args.eval]]
    src = rng.choice(args.eval, size=args.planted, replace=False)
    planted, planted_src, planted_kind = [], [], []
    for kind in VARIANTS:
        for j in src:
            planted.append(plant(evals[j], kind, rng))
            planted_src.append(int(j))
            planted_kind.append(kind)
    planted_src = np.array(planted_src)
    distinct = [Image.fromarray(a) for a in x_tr[:args.distinct]]
    d_lab, e_lab = y_tr[:args.distinct], y_te[:args.eval]
    result = {"eval": args.eval, "planted": len(planted), "distinct": args.distinct, "hashes": {}}
    for kind, size in HASHES:
        t0 = time.perf_counter()
        eh = np.stack([dedup.image_hash(im, kind, size) for im in evals])
        per_img = (time.perf_counter() - t0) / len(evals)
        ph = np.stack([dedup.image_hash(im, kind, size) for im in planted])
        dh = np.stack([dedup.image_hash(im, kind, size) for im in distinct])
        pd = dedup.hamming(ph, eh)[np.arange(len(ph)), planted_src]
        _, nd = dedup.nearest(dh, eh)
        same = np.array([dedup.hamming(dh[i:i + 1], eh[e_lab == d_lab[i]]).min() for i in range(len(dh))])
        worst = {k: int(pd[np.array(planted_kind) == k].max()) for k in VARIANTS}
        t_min = int(pd.max())
        result["hashes"][f"{kind}{size * size}"] = {
            "bits": size * size, "ms_per_image": round(per_img * 1000, 3),
            "planted_max_distance": t_min, "planted_max_by_kind": worst,
            "distinct_within_t": int((nd <= t_min).sum()),
            "distinct_same_class_within_t": int((same <= t_min).sum()),
            "distinct_nearest_percentiles": {p: int(np.percentile(nd, p)) for p in (1, 5, 10, 50)},
        }
        print(kind, size, result["hashes"][f"{kind}{size * size}"], flush=True)
    kind, size, t = dedup.DEFAULT_HASH, dedup.DEFAULT_HASH_SIZE, dedup.DEFAULT_THRESHOLD
    eh = np.stack([dedup.image_hash(im, kind, size) for im in evals])
    ph = np.stack([dedup.image_hash(im, kind, size) for im in planted])
    dh = np.stack([dedup.image_hash(im, kind, size) for im in distinct])
    t0 = time.perf_counter()
    psim = np.array([dedup.pixel_similarity(planted[i], evals[planted_src[i]]) for i in range(len(planted))])
    ms_pair = (time.perf_counter() - t0) / len(planted) * 1000
    qi, rj, _ = dedup.hash_matches(dh, eh, t)
    best = {}
    for q, r in zip(qi.tolist(), rj.tolist()):
        best[q] = max(best.get(q, -1.0), dedup.pixel_similarity(distinct[q], evals[r]))
    dsim = np.array(sorted(best.values(), reverse=True))
    pt = dedup.DEFAULT_PIXEL_THRESHOLD
    removed = [q for q, s in best.items() if s >= pt]
    result["chosen"] = {
        "hash": kind, "hash_size": size, "threshold": t, "pixel_threshold": pt,
        "planted_min_pixel_similarity": round(float(psim.min()), 4),
        "planted_pixel_min_by_kind": {k: round(float(psim[np.array(planted_kind) == k].min()), 4)
                                      for k in VARIANTS},
        "planted_caught": int(((dedup.hamming(ph, eh)[np.arange(len(ph)), planted_src] <= t)
                               & (psim >= pt)).sum()),
        "distinct_hash_matched": len(best), "distinct_hash_pairs": int(len(qi)),
        "distinct_top_pixel_similarities": [round(float(s), 4) for s in dsim[:15]],
        "distinct_removed": len(removed), "distinct_removed_indices": sorted(removed),
        "ms_per_pixel_check": round(ms_pair, 3),
    }
    print(result["chosen"], flush=True)
    result["machine"] = f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
    result["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    result["command"] = "python " + " ".join(sys.argv)
    atomic_write_json(args.out + ".json", result)
    lines = [f"# Perceptual hash measurement (Fashion-MNIST)\n", f"{result['date']}, {result['machine']}\n",
             f"Command: `{result['command']}`\n",
             f"Eval {args.eval} test images; {len(planted)} planted copies ({', '.join(VARIANTS)}) of "
             f"{args.planted} eval images; {args.distinct} distinct training images.\n",
             "| hash | bits | ms/img | t = max planted distance | worst by kind | distinct within t (any class / "
             "same class) | distinct nearest p1/p5/p10/p50 |", "|---|---|---|---|---|---|---|"]
    for name, h in result["hashes"].items():
        p = h["distinct_nearest_percentiles"]
        lines.append(f"| {name} | {h['bits']} | {h['ms_per_image']} | {h['planted_max_distance']} | "
                     f"{h['planted_max_by_kind']} | {h['distinct_within_t']} / {h['distinct_same_class_within_t']}"
                     f" | {p[1]}/{p[5]}/{p[10]}/{p[50]} |")
    c = result["chosen"]
    lines += ["", f"Chosen: {c['hash']} {c['hash_size'] ** 2}-bit, Hamming <= {c['threshold']}, then pixel "
              f"similarity >= {c['pixel_threshold']}.", "",
              f"- planted caught: {c['planted_caught']} / {len(planted)}; lowest planted pixel similarity "
              f"{c['planted_min_pixel_similarity']} (by kind {c['planted_pixel_min_by_kind']})",
              f"- distinct images with a hash match: {c['distinct_hash_matched']} ({c['distinct_hash_pairs']} pairs);"
              f" highest pixel similarities {c['distinct_top_pixel_similarities']}",
              f"- distinct images removed after the pixel check: {c['distinct_removed']} "
              f"(training indices {c['distinct_removed_indices']})",
              f"- cost: {c['ms_per_pixel_check']} ms per pixel check"]
    atomic_write_text(args.out + ".md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
