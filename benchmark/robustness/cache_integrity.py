"""What the soft-label cache's chunk checks cost on a cache of ImageNet-1k size.

Writes a synthetic cache (random top-K, the layout tools/cache_soft_labels.py writes: ImageNet-1k's
1,281,167 images by default, chunks of 1024, top-10 float16 with uint16 classes) and times:

* training start-up: ``check_sizes`` (one ``stat`` per chunk file, against the manifest's record);
* the header check of one chunk as it is first memory-mapped, and of all of them;
* ``record_chunks`` (what generation adds before writing the manifest: headers + every file hashed);
* ``verify_cache`` (``--verify DIR``: headers, sizes, hashes).

Run: python benchmark/robustness/cache_integrity.py [--views 10] [--images 1281167] [--topk 10] [--keep DIR]
Files are read warm (just written, in the page cache) unless --cold drops the page cache first (root only).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark.common import results_dir, write_results  # noqa: E402

from ppssld.cache import store  # noqa: E402
from ppssld.cache.integrity import check_sizes, record_chunks, tasks, verify_cache  # noqa: E402
from ppssld.cache.manifest import FORMAT, MANIFEST, VERSION  # noqa: E402
from ppssld.utils.chunk_files import npy_difference  # noqa: E402
from ppssld.utils.io import atomic_write_json  # noqa: E402


def _write(root: str, args: argparse.Namespace) -> dict:
    manifest = {"format": FORMAT, "version": VERSION, "views": args.views, "topk": args.topk,
                "chunk_size": args.chunk_size, "num_images": args.images, "prob_dtype": "float16",
                "index_dtype": store.index_dtype(1000).name, "values": "probs", "class_num": 1000}
    rng = np.random.default_rng(0)
    for v, c in tasks(manifest):
        (shape, cls_dtype), (_shape, prob_dtype) = store.chunk_layout(manifest, c)
        store.write_chunk(root, v, c, rng.random(shape, np.float32).astype(prob_dtype),
                          rng.integers(0, 1000, shape).astype(cls_dtype))
    return manifest


def _drop_page_cache() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as handle:
            handle.write("3\n")
        return True
    except OSError:
        return False


def _timed(fn, cold: bool) -> tuple:
    dropped = _drop_page_cache() if cold else False
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out, dropped


def main() -> None:
    """Write the synthetic cache, time each check, write benchmark/results/robustness/cache_integrity.{md,json}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1281167)
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each timing (root)")
    parser.add_argument("--keep", help="write the cache here and keep it (default: a temporary folder, removed)")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="cache_integrity_")
    try:
        start = time.perf_counter()
        manifest = _write(root, args)
        t_write = time.perf_counter() - start
        t_record, record, _ = _timed(lambda: record_chunks(root, manifest), args.cold)
        manifest["chunks"] = record
        atomic_write_json(os.path.join(root, MANIFEST), manifest)
        files, size = len(record), sum(e["size"] for e in record.values())
        t_sizes, _, dropped = _timed(lambda: check_sizes(root, manifest), args.cold)
        layout = store.chunk_layout(manifest, 0)
        t_one, _, _ = _timed(lambda: [npy_difference(p, *lay) for p, lay in zip(store.chunk_paths(root, 0, 0),
                                                                               layout)], args.cold)
        t_headers, _, _ = _timed(lambda: [npy_difference(p, *lay) for v, c in tasks(manifest) for p, lay in
                                         zip(store.chunk_paths(root, v, c), store.chunk_layout(manifest, c))],
                                 args.cold)
        t_verify, stats, _ = _timed(lambda: verify_cache(root), args.cold)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = [("training start-up: check_sizes (one stat per file)", t_sizes),
            ("one chunk's two headers, as it is first opened", t_one),
            ("all headers (not done at start-up)", t_headers),
            ("generation: record_chunks (headers + hashes, before the manifest)", t_record),
            ("--verify DIR (headers + sizes + hashes)", t_verify)]
    payload = {"images": args.images, "views": args.views, "topk": args.topk, "chunk_size": args.chunk_size,
               "files": files, "bytes": size, "cold": bool(args.cold and dropped), "seconds_to_write": round(t_write, 2),
               "seconds": {name: round(t, 4) for name, t in rows},
               "hash_mb_per_s": round(size / 1e6 / t_verify, 1), "verified_files": stats["files"]}
    table = "\n".join(f"| {name} | {t:.3f} s |" for name, t in rows)
    markdown = (f"Synthetic soft-label cache: {args.images:,} images x {args.views} views, top-{args.topk} float16 + "
                f"uint16, chunks of {args.chunk_size}: {files:,} files, {size / 1e6:.0f} MB; page cache "
                f"{'dropped before each timing (cold)' if payload['cold'] else 'warm (files just written)'}.\n\n"
                f"| check | time |\n|---|---|\n{table}\n\n"
                f"Hashing (BLAKE2b, `ppssld.utils.fingerprint.file_fingerprint`) read {payload['hash_mb_per_s']} MB/s "
                f"in --verify; an exact cache (K = 1000 classes, float32 + uint16, 6 KB per image and view) is "
                f"~{6000 // (args.topk * 4)}x larger per view, so its --verify and generation record time scale by "
                f"that, while start-up stays one stat per file.\n")
    print(json.dumps(payload, indent=1))
    print(write_results("cache_integrity", payload, markdown, results_dir(__file__)))


if __name__ == "__main__":
    main()
