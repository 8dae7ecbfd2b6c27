"""Wall time: PaddleClas's online engine vs ppssld online vs ppssld trained from the soft-label cache.

The issue-15 configuration: a frozen MobileNetV3_small_x1_0 teacher -> MobileNetV3_small_x0_35 student,
DistillationDMLLoss, 5,000 32x32 digits images (scikit-learn's digits training split, list lines
repeated), batch 64, 1 epoch, no evaluation, one PaddleClas-schema YAML for all three. Each arm is a
fresh ``tools/train.py`` process timed from start to exit (imports included), run back to back
``--rounds`` times; cache generation (``tools/cache_soft_labels.py --views 1 --topk 10``) is timed apart.

Usage: python benchmark/throughput/cache_vs_paddleclas.py --paddleclas-dir /work/paddleclas [--rounds 2]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

import yaml

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402

IMAGES, BATCH = 5000, 64


def config(data: str, teacher: str) -> dict:
    """The PaddleClas-schema distillation YAML (frozen teacher, DML, no eval)."""
    ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 32}},
           {"RandFlipImage": {"flip_code": 1}},
           {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                               "order": ""}}]  # as tests/fixtures/paddleclas/distill_dml_mv3.yaml: CHW out in both
    return {
        "Global": {"checkpoints": None, "pretrained_model": None, "output_dir": "./output", "device": "cpu",
                   "save_interval": 100, "eval_during_train": False, "eval_interval": 1, "epochs": 1,
                   "print_batch_step": 20, "use_visualdl": False, "image_shape": [3, 32, 32], "seed": 7,
                   "save_inference_dir": "./inference"},
        "Arch": {"name": "DistillationModel", "class_num": 10, "freeze_params_list": [True, False],
                 "infer_model_name": "Student",
                 "models": [{"Teacher": {"name": "MobileNetV3_small_x1_0", "class_num": 10, "pretrained": teacher}},
                            {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 10, "pretrained": False}}]},
        "Loss": {"Train": [{"DistillationDMLLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}]},
        "Optimizer": {"name": "Momentum", "momentum": 0.9, "lr": {"name": "Cosine", "learning_rate": 0.1},
                      "regularizer": {"name": "L2", "coeff": 0.00001}},
        "DataLoader": {"Train": {"dataset": {"name": "ImageNetDataset", "image_root": data + "/images/",
                                             "cls_label_path": data + "/train_5000.txt", "transform_ops": ops},
                                 "sampler": {"name": "DistributedBatchSampler", "batch_size": BATCH,
                                             "drop_last": False, "shuffle": True},
                                 "loader": {"num_workers": 0, "use_shared_memory": False}}},
    }


def timed(cmd: list, cwd: str, log: str) -> float:
    """Seconds a command takes; its output goes to ``log``; a failure stops the benchmark."""
    tic = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.run(cmd, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paddleclas-dir", required=True)
    parser.add_argument("--work", default="/tmp/ppssld_cache_vs_paddleclas")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import paddle

    from ppssld.arch.zoo import build_backbone
    from ppssld.data.prepare import prepare_dataset

    work = os.path.abspath(args.work)
    data = os.path.join(work, "digits")
    if not os.path.isfile(os.path.join(data, "prepare_summary.json")):
        prepare_dataset("digits", data, seed=0)
    rows = open(os.path.join(data, "train_list.txt"), encoding="utf-8").read().splitlines()
    with open(os.path.join(data, "train_5000.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(rows[i % len(rows)] for i in range(IMAGES)) + "\n")
    paddle.seed(0)
    teacher = os.path.join(work, "teacher_mv3_small_x1_0")
    paddle.save(build_backbone("MobileNetV3_small_x1_0", class_num=10).state_dict(), teacher + ".pdparams")
    cfg_path = os.path.join(work, "distill_dml.yaml")
    with open(cfg_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config(data, teacher), handle)
    py = sys.executable
    ours = os.path.join(common.ROOT, "tools")
    cache = os.path.join(work, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    gen = timed([py, os.path.join(ours, "cache_soft_labels.py"), "-c", cfg_path, "--views", "1", "--topk", "10",
                 "--out", cache], work, os.path.join(work, "generate.log"))
    arms = {"paddleclas_online": ([py, "tools/train.py", "-c", cfg_path, "-o", "Global.device=cpu", "-o",
                                   f"Global.output_dir={work}/out_pc"], args.paddleclas_dir),
            "ppssld_online": ([py, os.path.join(ours, "train.py"), "-c", cfg_path, "-o",
                               f"Global.output_dir={work}/out_online"], work),
            "ppssld_from_cache": ([py, os.path.join(ours, "train.py"), "-c", cfg_path, "-o",
                                   f"Global.output_dir={work}/out_cache", "-o", f"Global.soft_label_cache={cache}"],
                                  work)}
    walls = {name: [] for name in arms}
    for r in range(args.rounds):
        for name, (cmd, cwd) in arms.items():
            walls[name].append(timed(cmd, cwd, os.path.join(work, f"{name}_{r}.log")))
            print(f"round {r} {name}: {walls[name][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    speedup = med["paddleclas_online"] / med["ppssld_from_cache"]
    md = ("| arm (fresh `tools/train.py` process, 1 epoch, imports included) | wall s (median) | rounds |\n"
          "|---|---|---|\n" + "".join(f"| {k} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} |\n"
                                         for k, v in walls.items())
          + f"\nPaddleClas online / ppssld from the cache: **{speedup:.2f}x** (target >= 1.8x: "
            f"{'PASS' if speedup >= 1.8 else 'FAIL'}); PaddleClas online / ppssld online: "
            f"{med['paddleclas_online'] / med['ppssld_online']:.2f}. Cache generation (1 view, top-10, "
            f"{IMAGES:,} images, its own process): {gen:.1f} s, once per teacher. MobileNetV3_small_x1_0 "
            f"(frozen, random weights) -> MobileNetV3_small_x0_35, DistillationDMLLoss, digits 32x32 "
            f"({len(rows):,} images, lines repeated to {IMAGES:,}), batch {BATCH}, no eval.\n")
    common.write_results("cache_vs_paddleclas", {"walls": walls, "median": med, "generation_s": gen,
                                                 "speedup_vs_paddleclas": speedup}, md,
                        common.results_dir(__file__))
    print(md)


if __name__ == "__main__":
    main()
