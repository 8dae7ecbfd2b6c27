"""Data-loader throughput (img/s) on the Fashion-MNIST training list with the training transforms.

Prepares Fashion-MNIST into --data first when it is not there yet (tools/prepare_data.py layout),
then times ``build_dataloader`` at each ``num_workers`` (batch 128, shuffle, shared memory),
excluding the first batch (worker start-up, reported separately). Not a timed test.

    python benchmark/throughput/loader_throughput.py --workers 0 1 2 --batches 60 --rounds 2
"""
import argparse
import logging
import os
import statistics
import sys
import time
from typing import Any, Dict, List

import yaml

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark.common import ROOT, results_dir, write_results  # noqa: E402

from ppssld.data.loading.loader import build_dataloader  # noqa: E402
from ppssld.data.prepare import prepare_dataset  # noqa: E402

logger = logging.getLogger("ppssld.benchmark.loader_throughput")

CONFIG = os.path.join(ROOT, "ppcls_configs", "quick_start", "fashion_mnist", "ssld_R18_MV3_small_x0_35.yaml")
FALLBACK_OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 32}},
                {"RandCropImage": {"size": 32, "scale": [0.7, 1.0]}}, {"RandFlipImage": {"flip_code": 1}},
                {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.286] * 3, "std": [0.353] * 3, "order": ""}},
                {"ToCHWImage": None}]


def training_ops(config: str) -> List[Any]:
    """``DataLoader.Train.dataset.transform_ops`` of the Fashion-MNIST SSLD config (or the same list built in)."""
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as handle:
            return yaml.safe_load(handle)["DataLoader"]["Train"]["dataset"]["transform_ops"]
    return FALLBACK_OPS


def measure(data: str, ops: List[Any], workers: int, batches: int, batch_size: int) -> Dict[str, float]:
    """Time one pass of ``batches`` batches after the first; return img/s and start-up seconds."""
    cfg = {"dataset": {"name": "ImageNetDataset", "image_root": os.path.join(data, "images"),
                       "cls_label_path": os.path.join(data, "train_list.txt"), "transform_ops": ops},
           "sampler": {"name": "DistributedBatchSampler", "batch_size": batch_size, "drop_last": True,
                       "shuffle": True},
           "loader": {"num_workers": workers, "use_shared_memory": True}}
    loader, sampler = build_dataloader(cfg, "train", seed=0)
    sampler.set_epoch(1)
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    images = 0
    start = time.perf_counter()
    for _ in range(batches):
        images_batch, _labels = next(iterator)
        images += images_batch.shape[0]
    elapsed = time.perf_counter() - start
    del iterator
    return {"img_per_s": images / elapsed, "first_batch_s": first, "images": images}


def main() -> None:
    """Prepare if needed, measure each worker count ``--rounds`` times (interleaved), write results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "dataset", "fashion_mnist"))
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not os.path.isfile(os.path.join(args.data, "train_list.txt")):
        start = time.perf_counter()
        prepare_dataset("fashion_mnist", args.data)
        print(f"prepared Fashion-MNIST in {time.perf_counter() - start:.1f} s")
    ops = training_ops(args.config)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    runs: Dict[int, List[Dict[str, float]]] = {w: [] for w in args.workers}
    for _ in range(args.rounds):
        for workers in args.workers:
            result = measure(args.data, ops, workers, args.batches, args.batch_size)
            runs[workers].append(result)
            print(f"num_workers={workers}: {result['img_per_s']:.0f} img/s "
                  f"(first batch {result['first_batch_s']:.2f} s)")
    rows = {str(w): {"img_per_s_median": round(statistics.median(r["img_per_s"] for r in rs), 1),
                     "img_per_s_rounds": [round(r["img_per_s"], 1) for r in rs],
                     "first_batch_s_median": round(statistics.median(r["first_batch_s"] for r in rs), 2)}
            for w, rs in runs.items()}
    table = "\n".join(f"| {w} | {row['img_per_s_median']:.0f} | {row['first_batch_s_median']:.2f} |"
                      for w, row in rows.items())
    markdown = ("| num_workers | img/s (median of rounds) | first batch (s) |\n|---|---|---|\n" + table + "\n\n"
                f"Fashion-MNIST train_list.txt (60,000 28x28 PNG), training transforms of "
                f"`{os.path.relpath(args.config, ROOT) if os.path.isfile(args.config) else 'built-in list'}` "
                f"(Decode, Resize 32, RandCrop 32 scale [0.7, 1], flip, normalize, CHW), batch {args.batch_size}, "
                f"shuffle, shared memory; {args.batches} batches timed after the first, {args.rounds} interleaved "
                f"rounds. Student training (MobileNetV3_small_x0_35, 32x32, batch 128) ran at ~280 img/s: see "
                f"train_throughput.md.\n\nLoad average before the run: {load}. The cores are shared with other "
                f"jobs, so rounds vary (see the JSON); on 2 cores the workers and the main process (collation, "
                f"tensor conversion) compete, so more workers need not be faster here. During training the main "
                f"process is busy with the model, and num_workers >= 1 moves decoding off it.\n")
    path = write_results("loader_throughput", {"dataset": "fashion_mnist train_list.txt", "batch_size": args.batch_size,
                                               "batches_timed": args.batches, "rounds": args.rounds,
                                               "transform_ops": ops, "load_average_before": load,
                                               "results": rows}, markdown, results_dir(__file__))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
