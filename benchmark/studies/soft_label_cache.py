"""Soft-label cache: how far the top-K rebuilt teacher distribution is from the full softmax, and storage.

On the ladder's Fashion-MNIST split (5,000 labeled + the first --unlabeled images of the pool), the
teacher's full softmax of view 0 is cached once (K = 10 = class count, float32: exact), then rebuilt
from its top-K for K = 1, 5, 10 in both ways (missing mass spread evenly over the other classes, or
the top-K renormalised) and compared with the full softmax by the mean Jensen-Shannon divergence
(nats, per image). The float16 storage error is measured on a float16 K = 10 cache of the same view.
Storage: bytes per image per view measured on disk, and extrapolated to ImageNet-1k (1.28M images,
1,000 classes) and the paper's 5M-image set for V = 10, 50 and K = 10.

Usage: python benchmark/studies/soft_label_cache.py --teacher T.pdparams [--data DIR] [--unlabeled 5000]
"""
import argparse
import json
import os
import sys
import time
from typing import Any, Dict

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402
import numpy as np  # noqa: E402

from ppssld.cache import store  # noqa: E402
from ppssld.cache.generate import generate  # noqa: E402
from ppssld.cache.reader import REBUILD_MODES, rebuild  # noqa: E402
from ppssld.utils.config import load_config  # noqa: E402

QS_YAML = os.path.join(common.ROOT, "ppcls_configs", "quick_start", "fashion_mnist", "ssld_R18_MV3_small_x0_35.yaml")
KS = (1, 5, 10)


def js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row Jensen-Shannon divergence (nats) of two distributions (float64)."""
    p, q = p.astype(np.float64), q.astype(np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * (np.log(a) - np.log(b)), 0.0).sum(axis=1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def load_view(root: str, view: int = 0) -> tuple:
    """All rows of one view: ``(probs float32, classes int64)``."""
    manifest = json.load(open(os.path.join(root, "manifest.json"), encoding="utf-8"))
    reader = store.ChunkReader(root, manifest["chunk_size"], manifest["num_images"])
    return reader.gather(view, np.arange(manifest["num_images"])), manifest


def view_bytes(root: str, view: int = 0) -> int:
    """Bytes on disk of one view (chunk files, headers included)."""
    folder = os.path.join(root, f"v{view:04d}")
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))


def extrapolation(k: int = 10, classes: int = 1000) -> Dict[str, Any]:
    """Bytes for ImageNet-1k and the paper's 5M images at V = 10, 50 (float16 probs + smallest index type)."""
    per = k * (2 + store.index_dtype(classes).itemsize)
    return {"bytes_per_image_view": per, "index_dtype": store.index_dtype(classes).name,
            "sets": {name: {str(v): n * per * v for v in (10, 50)}
                     for name, n in (("ImageNet-1k (1.28M)", 1_281_167), ("SSLD 5M", 5_000_000))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", required=True, help="teacher ResNet18 .pdparams trained on Fashion-MNIST")
    parser.add_argument("--data", default=None, help="prepared Fashion-MNIST student split (default: prepare one "
                                                     "in --work: 5,000 labeled, 55,000 unlabeled, seed 0)")
    parser.add_argument("--work", default="/tmp/ppssld_soft_label_cache")
    parser.add_argument("--unlabeled", type=int, default=5000, help="pool images cached besides the labeled ones")
    args = parser.parse_args()
    data = args.data
    if data is None:
        from ppssld.data.prepare import prepare_dataset

        data = os.path.join(args.work, "data")
        if not os.path.isfile(os.path.join(data, "prepare_summary.json")):
            prepare_dataset("fashion_mnist", data, labeled=5000, unlabeled=55000, seed=0)
    os.makedirs(args.work, exist_ok=True)
    pool = os.path.join(args.work, f"unlabeled_first{args.unlabeled}.txt")
    with open(os.path.join(data, "unlabeled_list.txt"), encoding="utf-8") as src, open(pool, "w", encoding="utf-8") as dst:
        dst.writelines(line for _, line in zip(range(args.unlabeled), src))
    config = load_config(QS_YAML, [f"DataLoader.Train.dataset.image_root={os.path.join(data, 'images')}",
                                   f"DataLoader.Train.dataset.cls_label_path={os.path.join(data, 'train_list.txt')}",
                                   f"DataLoader.Train.dataset.unlabeled_label_path={pool}",
                                   f"Arch.models.Teacher.pretrained={args.teacher}"])
    timings = {}
    for name, dtype in (("full_f32", "float32"), ("k10_f16", "float16")):
        out = os.path.join(args.work, name)
        tic = time.perf_counter()
        stats = generate(config, out, views=1, topk=10, prob_dtype=dtype)
        timings[name] = {"seconds": round(time.perf_counter() - tic, 1), "images_per_s": stats["images_per_s"],
                         "images_now": stats["images_now"]}
    (probs, classes), manifest = load_view(os.path.join(args.work, "full_f32"))
    full = rebuild(probs, classes, 10)
    labels = np.array([int(line.split()[-1]) for line in open(os.path.join(data, "train_list.txt"), encoding="utf-8")])
    teacher_top1 = float((classes[: len(labels), 0] == labels).mean())
    rows = {mode: {str(k): float(js(full, rebuild(probs[:, :k], classes[:, :k], 10, mode)).mean()) for k in KS}
            for mode in REBUILD_MODES}
    (p16, c16), _ = load_view(os.path.join(args.work, "k10_f16"))
    f16 = float(js(full, rebuild(p16, c16, 10)).mean())
    tail = {str(k): float((1 - probs[:, :k].sum(axis=1)).mean()) for k in KS}
    measured = view_bytes(os.path.join(args.work, "k10_f16")) / manifest["num_images"]
    ext = extrapolation()
    payload = {"images": manifest["num_images"], "teacher": args.teacher, "teacher_top1_view0_labeled": teacher_top1,
               "js": rows, "js_float16_k10": f16, "missing_mass": tail, "timings": timings,
               "bytes_per_image_view_fashion_mnist_k10": measured, "extrapolation_k10": ext}
    md = [f"{manifest['num_images']:,} Fashion-MNIST training images (5,000 labeled + {args.unlabeled:,} of the "
          f"pool), view 0 (the training transform of epoch 1), teacher ResNet18 `{os.path.basename(args.teacher)}` "
          f"(top-1 {100 * teacher_top1:.2f}% on the augmented labeled images). Mean JS divergence (nats) between "
          f"the full teacher softmax and the one rebuilt from the top-K:", "",
          "| K | mass outside the top-K | JS, missing mass spread evenly | JS, top-K renormalised |",
          "|---|---|---|---|"]
    md += [f"| {k} | {tail[str(k)]:.4f} | {rows['spread'][str(k)]:.2e} | {rows['renormalise'][str(k)]:.2e} |"
           for k in KS]
    better = [k for k in KS if k < 10 and rows["spread"][str(k)] < rows["renormalise"][str(k)]]
    verdict = ("spreading the missing mass evenly is closer at every K < 10" if len(better) == len(KS) - 1 else
               f"spreading is closer only at K = {better}")
    md += ["", f"K = 10 is the class count here (nothing dropped); K = 20 does not exist on 10 classes. Float16 "
               f"storage of K = 10 costs a mean JS of {f16:.1e}. Verdict: {verdict}; `spread` is the rebuild "
               f"training uses (`ppssld.cache.reader.DEFAULT_REBUILD`).", "",
           f"Storage per image per view, K = 10, float16 + {store.index_dtype(10).name}: {measured:.2f} bytes on "
           f"disk (headers included). For 1,000 classes (uint16 indices) and K = 10: "
           f"{ext['bytes_per_image_view']} bytes per image per view:", "",
           "| images | V = 10 | V = 50 |", "|---|---|---|"]
    md += [f"| {name} | {sizes['10'] / 1e9:.2f} GB | {sizes['50'] / 1e9:.2f} GB |" for name, sizes in ext["sets"].items()]
    md += ["", "Generation: " + ", ".join(f"{n}: {t['images_now']} images in {t['seconds']} s "
                                          f"({t['images_per_s']} img/s)" for n, t in timings.items())]
    common.write_results("soft_label_cache", payload, "\n".join(md) + "\n", common.results_dir(__file__))
    print("\n".join(md))


if __name__ == "__main__":
    main()
