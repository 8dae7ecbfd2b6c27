"""Mining at scale: indexed de-duplication and streaming selection vs today's scan, synthetic and real.

Synthetic (seeded): pool 10k / 100k / 1M x evaluation 10k / 50k signatures: random 64-bit
hashes, smooth 16x16 thumbnails and 32x32 grey images (random low-frequency mixtures), 1%
of the pool planted as noisy copies of evaluation images. Per cell, on one core
(``faiss.omp_set_num_threads(1)``, ``OMP_NUM_THREADS=1``): time per pool image and peak
memory of the search (faiss index), the confirmation (aligned band-pass ranking + pixel
check) and the streaming top-k selection (C=1000, k=400, top-10, one 16k-row chunk at a
time) beside today's all-pairs scan and one-shot selection. Each stage runs on the whole
pool or until ``--cap`` seconds (the rate is then measured on the images done, and the
table says how many). Peak memory: ``tracemalloc`` (numpy buffers) plus the faiss index size.

Real: Fashion-MNIST planted duplicates (first ``--eval`` test images, ``--planted`` sources x
5 kinds, first ``--distinct`` training images), before (thumbnail ranking) / after (aligned
band-pass ranking): recall, false removals, and a contact sheet of removed distinct pairs.

Usage: OMP_NUM_THREADS=1 python benchmark/mining/mining_scale.py [--pools 10000 100000 1000000 --evals 10000 50000]
Writes benchmark/results/mining/mining_scale.{md,json,png} and mining_scale_pairs.png.
"""
import argparse
import datetime
import os
import platform
import sys
import time
import tracemalloc
from typing import Any, Callable, Dict, List, Tuple

import cv2
import faiss
import numpy as np

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402

from ppssld.mining.dedup import confirm as confirm_mod  # noqa: E402
from ppssld.mining.dedup import near_duplicates as dedup  # noqa: E402
from ppssld.mining.dedup.index import RefIndex  # noqa: E402
from ppssld.mining.select import StreamingTopK, select_topk  # noqa: E402

BLOCK = 16384
ARGS_POOLS: List[int] = [10_000]
C, K, TOPN = 1000, 400, 10


def _basis(side: int, count: int, seed: int, blur: float = 2.0) -> np.ndarray:
    """``count`` smooth random images (side x side, Gaussian blur ``blur`` px) used as a basis."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(count, side, side)).astype(np.float32)
    return np.stack([cv2.GaussianBlur(x, (0, 0), blur).ravel() for x in raw])


class Synthetic:
    """Seeded signatures: reference set and pool blocks (1% planted copies of references)."""

    def __init__(self, n_eval: int, seed: int = 0) -> None:
        self.tb, self.gb = _basis(16, 48, seed), _basis(32, 48, seed + 1, blur=1.5)
        self.ref = self._make(n_eval, np.random.default_rng(seed + 2))

    def _make(self, n: int, rng: np.random.Generator) -> confirm_mod.Sigs:
        coef = rng.normal(size=(n, 48)).astype(np.float32) * (1.0 / np.arange(1, 49) ** 0.5)
        thumb = coef @ self.tb
        thumb -= thumb.mean(axis=1, keepdims=True)
        thumb = (thumb / np.linalg.norm(thumb, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
        grey = coef @ self.gb
        grey = np.clip(128 + 40 * grey / grey.std(axis=1, keepdims=True), 0, 255).astype(np.uint8)
        return confirm_mod.Sigs(rng.integers(0, 256, size=(n, 8), dtype=np.uint8), thumb, grey,
                                np.full(n, 32, np.int32))

    def pool(self, start: int, n: int) -> Tuple[confirm_mod.Sigs, np.ndarray]:
        """Pool rows start..start+n (same for any blocking) and which ones are planted copies."""
        rng = np.random.default_rng([7, start])
        sigs = self._make(n, rng)
        planted = rng.random(n) < 0.01
        src = rng.integers(0, len(self.ref.hash), size=int(planted.sum()))
        flips = (rng.integers(0, 2, size=(len(src), 8)) << rng.integers(0, 8, size=(len(src), 8))).astype(np.uint8)
        sigs.hash[planted] = self.ref.hash[src] ^ flips
        noise = rng.normal(0, 2, size=(len(src), 1024))
        sigs.grey[planted] = np.clip(self.ref.grey[src] + noise, 0, 255).astype(np.uint8)
        sigs.thumb[planted] = self.ref.thumb[src]
        return sigs, planted


def _timed(fn: Callable[[int, int], float], total: int, cap: float, block: int = BLOCK) -> Dict[str, Any]:
    """``fn(start, n)`` returns the seconds of its measured part; run over blocks until done or ``cap``."""
    tracemalloc.start()
    spent, done = 0.0, 0
    while done < total and spent < cap:
        n = min(block, total - done)
        spent += fn(done, n)
        done += n
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"images": done, "of": total, "seconds": round(spent, 2), "ms_per_image": round(1000 * spent / done, 5),
            "peak_mib": round(peak / 2 ** 20, 1)}


def synthetic_cell(syn: Synthetic, index: RefIndex, n_pool: int, cap: float) -> Dict[str, Any]:
    """Search, confirmation, scan and selection timings for one pool size."""
    found = {"planted": 0, "caught": 0, "removed": 0, "candidate_pairs": 0}

    def search(start: int, n: int) -> float:
        sigs, _ = syn.pool(start, n)
        t = time.perf_counter()
        pairs = index.candidates(sigs)
        spent = time.perf_counter() - t
        found["candidate_pairs"] += len(pairs.query)
        return spent

    def confirm(start: int, n: int) -> float:
        sigs, planted = syn.pool(start, n)
        pairs = index.candidates(sigs)
        t = time.perf_counter()
        matches, _ = confirm_mod.confirm(pairs, sigs, index.ref, dedup.pixel_check(sigs, index.ref),
                                         dedup.DEFAULT_MAX_CHECKS, dedup.DEFAULT_PIXEL_THRESHOLDS, "grid",
                                         confirm_mod.DEFAULT_GRID_MIN, index.ref_band)
        spent = time.perf_counter() - t
        hit = np.zeros(n, bool)
        hit[[m.query for m in matches]] = True
        found["planted"] += int(planted.sum())
        found["caught"] += int((hit & planted).sum())
        found["removed"] += int(hit.sum())
        return spent

    def scan(start: int, n: int) -> float:
        sigs, _ = syn.pool(start, n)
        t = time.perf_counter()
        dedup.scan_candidates(sigs, index.ref)
        return time.perf_counter() - t

    row: Dict[str, Any] = {"pool": n_pool, "eval": len(index.ref.hash)}
    row["search"] = _timed(search, n_pool, cap)
    row["search"]["candidate_pairs_per_image"] = round(found.pop("candidate_pairs") / row["search"]["images"], 3)
    row["confirmation"] = _timed(confirm, n_pool, cap)
    row["confirmation"].update(found)
    row["scan_today"] = _timed(scan, n_pool, cap / 2, block=1024) if n_pool == min(ARGS_POOLS) else None
    row["selection"] = selection_cell(n_pool, cap)
    return row


def _scores(start: int, n: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([11, start])
    prob = np.sort(rng.dirichlet(np.full(TOPN, 0.3), size=n).astype(np.float32), axis=1)[:, ::-1]
    cls = (rng.integers(0, C, size=(n, 1)) + np.arange(TOPN) * rng.integers(1, 50, size=(n, 1))) % C
    return np.ascontiguousarray(prob), cls.astype(np.int32)


def selection_cell(n_pool: int, cap: float) -> Dict[str, Any]:
    """Streaming top-k (one chunk in memory) vs the one-shot selection over the whole pool."""
    acc = StreamingTopK(K, C)
    def add(start: int, n: int) -> float:
        prob, cls = _scores(start, n)
        t = time.perf_counter()
        acc.add(prob, cls, offset=start)
        return time.perf_counter() - t

    stream = _timed(add, n_pool, cap)
    stream["kept_entries"] = int(len(acc.img))
    out = {"streaming": stream}
    if n_pool <= 1_000_000:
        tracemalloc.start()
        t = time.perf_counter()
        parts = [_scores(s, min(BLOCK, n_pool - s)) for s in range(0, n_pool, BLOCK)]
        prob, cls = np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts])
        del parts
        ref = select_topk(prob, cls, K, C)
        spent = time.perf_counter() - t
        out["one_shot_today"] = {"images": n_pool, "seconds": round(spent, 2),
                                 "ms_per_image": round(1000 * spent / n_pool, 5),
                                 "peak_mib": round(tracemalloc.get_traced_memory()[1] / 2 ** 20, 1)}
        tracemalloc.stop()
        if stream["images"] == n_pool:
            got = acc.result()
            out["streaming"]["equal_to_one_shot"] = bool(np.array_equal(got.index, ref.index))
    return out


def main() -> None:
    """Run the synthetic grid and the Fashion-MNIST measurement; write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--evals", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--cap", type=float, default=60.0, help="seconds per stage and cell at most")
    ap.add_argument("--fm-eval", type=int, default=2000), ap.add_argument("--fm-planted", type=int, default=100)
    ap.add_argument("--fm-distinct", type=int, default=2000)
    ap.add_argument("--out", default=os.path.join(common.results_dir(__file__), "mining_scale"),
                    help="results path without extension (default: benchmark/results/mining/...)")
    args = ap.parse_args()
    ARGS_POOLS[:] = args.pools  # the scan's rate does not depend on the pool: measured at the smallest
    faiss.omp_set_num_threads(1)
    confirm_mod._operator()  # build the warp operator once, outside the timings
    rows: List[Dict[str, Any]] = []
    for n_eval in args.evals:
        syn = Synthetic(n_eval)
        t = time.perf_counter()
        index = RefIndex(syn.ref)
        _ = index.ref_band
        build = round(time.perf_counter() - t, 2)
        for n_pool in args.pools:
            row = synthetic_cell(syn, index, n_pool, args.cap)
            row["index_build_s"] = build
            row["index_mib"] = round((syn.ref.hash.nbytes + n_eval * index.basis.shape[0] * 4
                                      + index.ref_band.nbytes + sum(a.nbytes for a in syn.ref)) / 2 ** 20, 1)
            rows.append(row)
            print(row, flush=True)
    from benchmark.mining.mining_scale_real import fashion_mnist, write_results
    real = fashion_mnist(args.fm_eval, args.fm_planted, args.fm_distinct, args.out + "_pairs.png")
    result = {"synthetic": rows, "fashion_mnist": real, "multi_index_hashing": multi_index(),
              "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus (shared), one core "
                         f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, faiss 1 thread)",
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python " + common.command_line()}
    write_results(result, args.out)


def multi_index() -> Dict[str, Any]:
    """faiss flat Hamming range search vs multi-index hashing at radius 18 of 64 bits (50k refs, 2k queries)."""
    rng = np.random.default_rng(0)
    ref, query = (rng.integers(0, 256, size=(n, 8), dtype=np.uint8) for n in (50_000, 2_000))
    flat = faiss.IndexBinaryFlat(64)
    flat.add(ref)
    t = time.perf_counter()
    hits = len(flat.range_search(query, 19)[2])
    out = {"flat": {"ms_per_query": round(1000 * (time.perf_counter() - t) / len(query), 4), "pairs": hits}}
    for tables, bits in ((8, 8), (16, 4)):
        mih = faiss.IndexBinaryMultiHash(64, tables, bits)
        mih.add(ref)
        t = time.perf_counter()
        found = len(mih.range_search(query, 19)[2])
        out[f"multi_hash_{tables}x{bits}"] = {"ms_per_query": round(1000 * (time.perf_counter() - t) / len(query), 4),
                                              "pairs": found}
    return out


if __name__ == "__main__":
    main()
