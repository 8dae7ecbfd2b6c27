"""Choose the main job's default teacher by measurement: candidates trained side by side on Fashion-MNIST.

Two parts: (1) a speed screen of zoo architectures at 32 px (parameters, train and inference img/s
on random batches), (2) the promising candidates trained with the real trainer on class-balanced
labeled subsets of the 60,000 training images, evaluated on the 10,000 test images. The main job
needs a teacher >= 85% within its 15-minute budget; the table shows which candidate gets there in
the least time.

Usage: python benchmark/teacher_choice.py [--only NAME ...] [--skip-screen]
"""
import argparse
import json
import os
import time
from typing import Any, Dict, List

import common  # noqa: F401  (sets sys.path)

from ppssld.utils.io import atomic_write_json

TEACHER_YAML = os.path.join(common.ROOT, "ppcls_configs", "quick_start", "fashion_mnist", "teacher_ResNet18.yaml")
WORK = os.path.join(common.ROOT, "output", "teacher_choice")
SCREEN = [("ResNet18", {}), ("ResNet18", {"stride_list": [1, 2, 2, 2, 2]}), ("MobileNetV1_x0_5", {}),
          ("PPLCNet_x0_5", {}), ("PPLCNet_x1_0", {"stride_list": [1, 2, 2, 2, 2]}),
          ("MobileNetV3_small_x0_35", {})]
FLIP_ONLY = ["DataLoader.Train.dataset.transform_ops.RandCropImage.scale=[1.0,1.0]",
             "DataLoader.Train.dataset.transform_ops.RandCropImage.ratio=[1.0,1.0]"]
# name -> (arch, labeled images, epochs, extra overrides, augmentation in words)
CANDIDATES = {
    "R18_40k_1ep_flip": ("ResNet18", 40000, 1, FLIP_ONLY, "flip"),
    "R18_40k_1ep_crop": ("ResNet18", 40000, 1, [], "crop 0.7-1 + flip (shipped)"),
    "R18_20k_2ep_flip": ("ResNet18", 20000, 2, FLIP_ONLY, "flip"),
    "MV1x0.5_40k_1ep_flip": ("MobileNetV1_x0_5", 40000, 1, FLIP_ONLY, "flip"),
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


def train(name: str) -> Dict[str, Any]:
    """Train one candidate with the ppssld trainer; test top-1 after its last epoch and the wall time."""
    from ppssld.config import load_config
    from ppssld.engine.builder import build_trainer

    arch, labeled, epochs, extra, aug = CANDIDATES[name]
    data = _data(labeled)
    overrides = [f"Arch.name={arch}", f"Global.epochs={epochs}", f"Global.output_dir={os.path.join(WORK, name)}",
                 "Global.print_batch_step=100"] + extra + [
        f"DataLoader.{m}.dataset.image_root={data}/images" for m in ("Train", "Eval")] + [
        f"DataLoader.Train.dataset.cls_label_path={data}/train_list.txt",
        f"DataLoader.Eval.dataset.cls_label_path={data}/val_list.txt", f"Global.class_names={data}/label_list.txt"]
    config = load_config(TEACHER_YAML, overrides)
    tic = time.perf_counter()
    result = build_trainer(config).fit()
    wall = time.perf_counter() - tic
    return {"name": name, "arch": arch, "px": 32, "labeled": labeled, "epochs": epochs, "images_seen": labeled * epochs,
            "augmentation": aug, "top1": result["history"][-1].get("eval", {}).get("top1", result["best_metric"]),
            "best_top1": result["best_metric"], "wall_s": round(wall, 1), "overrides": extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--skip-screen", action="store_true")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    state_path = os.path.join(WORK, "state.json")
    state = json.load(open(state_path, encoding="utf-8")) if os.path.isfile(state_path) else {"runs": {}}
    if not args.skip_screen:
        state["screen"] = screen()
        atomic_write_json(state_path, state)
    for name in args.only:
        state["runs"][name] = train(name)
        atomic_write_json(state_path, state)
        print(state["runs"][name], flush=True)
    lines = ["Speed screen (random 32 px batches, train batch 128 with backward, inference batch 256):", "",
             "| architecture | params | train img/s | inference img/s |", "|---|---|---|---|"]
    for row in state.get("screen", []):
        kw = f" {row['kwargs']}" if row["kwargs"] else ""
        lines.append(f"| {row['arch']}{kw} | {row['params_M']}M | {row['train_ips']} | {row['infer_ips']} |")
    lines += ["", "Candidates trained (ppssld trainer, `teacher_ResNet18.yaml` with overrides, 32 px, Momentum 0.1 "
              "cosine, batch 128; test top-1 on the 10,000 Fashion-MNIST test images after the last epoch):", "",
              "| candidate | arch | labels | epochs | images seen | augmentation | wall (train + eval) | test top-1 |",
              "|---|---|---|---|---|---|---|---|"]
    for run in state["runs"].values():
        lines.append(f"| {run['name']} | {run['arch']} | {run['labeled']:,} | {run['epochs']} | {run['images_seen']:,} "
                     f"| {run['augmentation']} | {run['wall_s'] / 60:.1f} min | {100 * run['top1']:.2f}% |")
    common.write_results("teacher_choice", state, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
