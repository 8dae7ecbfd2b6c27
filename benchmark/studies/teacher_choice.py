"""Choose the main job's default teacher by measurement: candidates trained side by side on Fashion-MNIST.

Two parts: (1) a speed screen of zoo architectures at 32 px (parameters, train and inference img/s
on random batches), (2) the promising candidates trained with the real trainer on class-balanced
labeled subsets of the 60,000 training images, evaluated on the 10,000 test images. The main job
needs a teacher >= 85% within its 15-minute budget; the table shows which candidate gets there in
the least time.

Usage: python benchmark/studies/teacher_choice.py [--only NAME ...] [--seeds S ...] [--skip-screen]

Runs accumulate in ``output/teacher_choice/state.json`` (seeded from the committed results JSON), so a
later invocation adds rows to the table instead of dropping the earlier ones.
"""
import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402

from ppssld.utils.io import atomic_write_json  # noqa: E402

QS = os.path.join(common.ROOT, "ppcls_configs", "quick_start", "fashion_mnist")
TEACHER_YAML = os.path.join(QS, "teacher_ResNet18.yaml")
TEACHER_1EP_YAML = os.path.join(QS, "teacher_ResNet18_1ep.yaml")
RESULTS_JSON = os.path.join(common.results_dir(__file__), "teacher_choice.json")
WORK = os.path.join(common.ROOT, "output", "teacher_choice")
SCREEN = [("ResNet18", {}), ("ResNet18", {"stride_list": [1, 2, 2, 2, 2]}), ("MobileNetV1_x0_5", {}),
          ("PPLCNet_x0_5", {}), ("PPLCNet_x1_0", {"stride_list": [1, 2, 2, 2, 2]}),
          ("MobileNetV3_small_x0_35", {})]
FLIP_ONLY = ["DataLoader.Train.dataset.transform_ops.RandCropImage.scale=[1.0,1.0]",
             "DataLoader.Train.dataset.transform_ops.RandCropImage.ratio=[1.0,1.0]"]
MOMENTUM = "Momentum 0.1, batch 128"
# name -> (arch, labeled images, epochs, extra overrides, augmentation in words, yaml, optimizer in words)
CANDIDATES = {
    "R18_40k_1ep_flip": ("ResNet18", 40000, 1, FLIP_ONLY, "flip", TEACHER_YAML, MOMENTUM),
    "R18_40k_1ep_crop": ("ResNet18", 40000, 1, [], "crop 0.7-1 + flip (shipped)", TEACHER_YAML, MOMENTUM),
    "R18_20k_2ep_flip": ("ResNet18", 20000, 2, FLIP_ONLY, "flip", TEACHER_YAML, MOMENTUM),
    "MV1x0.5_40k_1ep_flip": ("MobileNetV1_x0_5", 40000, 1, FLIP_ONLY, "flip", TEACHER_YAML, MOMENTUM),
    "R18_60k_1ep_flip": ("ResNet18", 60000, 1, FLIP_ONLY, "flip", TEACHER_YAML, MOMENTUM),
    "R18_60k_1ep_flip_b64": ("ResNet18", 60000, 1, FLIP_ONLY + ["DataLoader.Train.sampler.batch_size=64"], "flip",
                             TEACHER_YAML, "Momentum 0.1, batch 64"),
    "R18_40k_1ep_adamw": ("ResNet18", 40000, 1, [], "flip", TEACHER_1EP_YAML,
                          "AdamW 0.002, batch 64 (`teacher_ResNet18_1ep.yaml`)"),
}


def screen() -> List[Dict[str, Any]]:
    """Parameters and train/inference img/s (batch 128 / 256, 32 px, random data) per architecture."""
    import paddle

    from ppssld.arch.zoo import build_backbone

    rows = []
    for name, kwargs in SCREEN:
        model = build_backbone(name, class_num=10, **kwargs)
        opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
        x, y = paddle.randn([128, 3, 32, 32]), paddle.randint(0, 10, [128, 1])
        for step in range(8):
            if step == 3:
                tic = time.perf_counter()
            loss = paddle.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
        train = 5 * 128 / (time.perf_counter() - tic)
        model.eval()
        with paddle.no_grad():
            xb = paddle.randn([256, 3, 32, 32])
            for step in range(6):
                if step == 2:
                    tic = time.perf_counter()
                model(xb)
        infer = 4 * 256 / (time.perf_counter() - tic)
        rows.append({"arch": name, "kwargs": kwargs, "params_M": round(sum(p.size for p in model.parameters()) / 1e6, 2),
                     "train_ips": round(train), "infer_ips": round(infer)})
        print(rows[-1], flush=True)
    return rows


def _data(labeled: int) -> str:
    from ppssld.data.prepare import prepare_dataset

    out = os.path.join(WORK, f"data_{labeled}")
    if not os.path.isfile(os.path.join(out, "train_list.txt")):
        prepare_dataset("fashion_mnist", out, labeled=labeled, seed=0)
    return out


def train(name: str, seed: Optional[int]) -> Dict[str, Any]:
    """Train one candidate with the ppssld trainer; test top-1 after its last epoch and the wall time
    (``seed``: Global.seed; None keeps the YAML's)."""
    from ppssld.utils.config import load_config
    from ppssld.engine.builder import build_trainer

    arch, labeled, epochs, extra, aug, yaml_path, optimizer = CANDIDATES[name]
    data = _data(labeled)
    out = os.path.join(WORK, name if seed is None else f"{name}_s{seed}")
    overrides = [f"Arch.name={arch}", f"Global.epochs={epochs}", f"Global.output_dir={out}",
                 "Global.print_batch_step=100"] + ([] if seed is None else [f"Global.seed={seed}"]) + extra + [
        f"DataLoader.{m}.dataset.image_root={data}/images" for m in ("Train", "Eval")] + [
        f"DataLoader.Train.dataset.cls_label_path={data}/train_list.txt",
        f"DataLoader.Eval.dataset.cls_label_path={data}/val_list.txt", f"Global.class_names={data}/label_list.txt"]
    config = load_config(yaml_path, overrides)
    tic = time.perf_counter()
    result = build_trainer(config).fit()
    wall = time.perf_counter() - tic
    return {"name": name, "seed": config["Global"]["seed"], "optimizer": optimizer, "arch": arch, "px": 32, "labeled": labeled, "epochs": epochs, "images_seen": labeled * epochs,
            "augmentation": aug, "top1": result["history"][-1].get("eval", {}).get("top1", result["best_metric"]),
            "best_top1": result["best_metric"], "wall_s": round(wall, 1), "overrides": extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--seeds", nargs="*", type=int, default=None, help="Global.seed of each run (default: the YAML's)")
    parser.add_argument("--skip-screen", action="store_true")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    state_path = os.path.join(WORK, "state.json")
    state = {"runs": {}}
    for path in (RESULTS_JSON, state_path):  # the committed table first, then this machine's newer runs
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                loaded = json.load(handle)
            state["runs"].update(loaded.get("runs", {}))
            state["screen"] = loaded.get("screen", state.get("screen", []))
    if not args.skip_screen:
        state["screen"] = screen()
        atomic_write_json(state_path, state)
    for name in args.only:
        for seed in args.seeds or [None]:
            key = name if seed is None else f"{name}_s{seed}"
            state["runs"][key] = train(name, seed)
            atomic_write_json(state_path, state)
            print(state["runs"][key], flush=True)
    lines = ["Speed screen (random 32 px batches, train batch 128 with backward, inference batch 256):", "",
             "| architecture | params | train img/s | inference img/s |", "|---|---|---|---|"]
    for row in state.get("screen", []):
        kw = f" {row['kwargs']}" if row["kwargs"] else ""
        lines.append(f"| {row['arch']}{kw} | {row['params_M']}M | {row['train_ips']} | {row['infer_ips']} |")
    lines += ["", "Candidates trained (ppssld trainer, `teacher_ResNet18.yaml` with overrides unless the optimizer column "
              "names another YAML, 32 px, cosine schedule; test top-1 on the 10,000 Fashion-MNIST test images after "
              "the last epoch; seed: Global.seed, 42 where the YAML's default was kept):", "",
              "| candidate | arch | optimizer | labels | epochs | images seen | augmentation | seed | wall (train + eval) "
              "| test top-1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in state["runs"].values():
        lines.append(f"| {run['name']} | {run['arch']} | {run.get('optimizer', MOMENTUM)} | {run['labeled']:,} "
                     f"| {run['epochs']} | {run['images_seen']:,} | {run['augmentation']} | {run.get('seed', 42)} "
                     f"| {run['wall_s'] / 60:.1f} min | {100 * run['top1']:.2f}% |")
    common.write_results("teacher_choice", state, "\n".join(lines) + "\n", common.results_dir(__file__))


if __name__ == "__main__":
    main()
