"""MKL's kernels on an AMD CPU: its own choice (generic SSE) vs ``MKL_DEBUG_CPU_TYPE=5`` (AVX2), which ppssld sets.

    python benchmark/mkl_dispatch.py                 # 2 alternated rounds of every part (about 15 min on 2 cores)
    python benchmark/mkl_dispatch.py --rounds 1 --labeled 500     # a smoke run

Arms: ``keep`` runs with ``PPSSLD_MKL_DISPATCH=keep`` (MKL decides, as before ppssld set anything); ``avx2`` with
ppssld's default on an AMD CPU (``MKL_DEBUG_CPU_TYPE=5``). Each part is its own process, the arms alternate.
The whole operation: ``tools/train.py`` on the main job's teacher config (ResNet18, 1 AdamW epoch) on a
class-balanced ``--labeled`` Fashion-MNIST images with its evaluation on the 10,000 test images, wall time of
the command and its top-1. Its parts: a 1024x1024 float32 matrix product, ResNet18's and
MobileNetV3_small_x0_35's 32-px training step (batch 64) and ResNet18's ``no_grad`` forward (batch 256).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmark import common  # noqa: E402

WORK = os.path.join(common.ROOT, "output", "bench_mkl_dispatch")
TEACHER = "ppcls_configs/quick_start/fashion_mnist/teacher_ResNet18_1ep.yaml"
PARTS = ("matmul", "resnet18_train", "mv3_train", "resnet18_eval")
ARMS = {"keep": {"PPSSLD_MKL_DISPATCH": "keep"}, "avx2": {}}


def part(name: str) -> float:
    """One part's figure in this process (GFLOP/s for ``matmul``, img/s otherwise)."""
    import numpy as np
    import paddle
    from ppssld.arch.zoo import build_backbone

    paddle.seed(0)
    if name == "matmul":
        a = paddle.to_tensor(np.random.default_rng(0).random((1024, 1024), np.float32))
        for _ in range(3):
            a @ a
        tic, n = time.perf_counter(), 20
        for _ in range(n):
            c = a @ a
        float(c.sum())
        return 2 * n * 1024 ** 3 / (time.perf_counter() - tic) / 1e9
    model = build_backbone("MobileNetV3_small_x0_35" if name == "mv3_train" else "ResNet18", class_num=10)
    if name == "resnet18_eval":
        model.eval()
        x = paddle.randn([256, 3, 32, 32])
        with paddle.no_grad():
            model(x)
            tic = time.perf_counter()
            for _ in range(4):
                out = model(x)
            float(out.sum())
        return 4 * 256 / (time.perf_counter() - tic)
    opt = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=model.parameters())
    x, y = paddle.randn([64, 3, 32, 32]), paddle.randint(0, 10, [64, 1])
    for step in range(13):
        if step == 3:
            tic = time.perf_counter()
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
    float(loss)
    return 10 * 64 / (time.perf_counter() - tic)


def _env(arm: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "PPSSLD_MKL_DISPATCH")}
    env.update(ARMS[arm])
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_part(name: str, arm: str) -> float:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--part", name], env=_env(arm),
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def data(labeled: int) -> str:
    from ppssld.data.prepare import prepare_dataset

    out = os.path.join(WORK, f"data_{labeled}")
    if not os.path.isfile(os.path.join(out, "train_list.txt")):
        prepare_dataset("fashion_mnist", out, labeled=labeled, seed=0)
    return out


def run_whole(arm: str, labeled: int, tag: str) -> Dict[str, Any]:
    folder = data(labeled)
    out = os.path.join(WORK, f"train_{arm}_{tag}")
    cmd = [sys.executable, "tools/train.py", "-c", TEACHER, "-o", f"Global.output_dir={out}",
           "Global.print_batch_step=1000", f"DataLoader.Train.dataset.image_root={folder}/images",
           f"DataLoader.Eval.dataset.image_root={folder}/images",
           f"DataLoader.Train.dataset.cls_label_path={folder}/train_list.txt",
           f"DataLoader.Eval.dataset.cls_label_path={folder}/val_list.txt"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.ROOT, env=_env(arm), capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    top1 = [float(m) for m in re.findall(r"top1: ([0-9.]+)", proc.stdout + proc.stderr)]
    note = re.search(r"MKL_DEBUG_CPU_TYPE[^;\n]*", proc.stdout + proc.stderr)
    return {"wall_s": round(wall, 1), "top1": top1[-1] if top1 else None, "log": note.group(0) if note else None}


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds of every part")
    p.add_argument("--labeled", type=int, default=4000, help="training images of the whole tools/train.py run")
    args = p.parse_args(argv)
    if args.part:
        print(part(args.part))
        return
    rows: Dict[str, Dict[str, List[Any]]] = {}
    for r in range(args.rounds):
        for arm in (("keep", "avx2") if r % 2 == 0 else ("avx2", "keep")):
            for name in PARTS:
                rows.setdefault(name, {}).setdefault(arm, []).append(round(run_part(name, arm), 1))
            rows.setdefault("whole", {}).setdefault(arm, []).append(run_whole(arm, args.labeled, f"r{r}"))
            print(arm, r, {k: v[arm][-1] for k, v in rows.items()}, flush=True)
    with open("/proc/loadavg", encoding="utf-8") as handle:
        load = handle.read().split()[:3]
    flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in open("/proc/cpuinfo").read()]
    md = [f"ISA flags: {', '.join(flags)}; vendor {__import__('ppssld.utils.cpu_dispatch', fromlist=['x']).cpu_vendor()}; "
          f"load average at the end {' '.join(load)}\n",
          "| part | MKL's own choice (`keep`) | `MKL_DEBUG_CPU_TYPE=5` (ppssld's default on AMD) | ratio (median) |",
          "|---|---|---|---|"]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    w = rows["whole"]
    md.append(f"| **whole `tools/train.py`** (teacher config, {args.labeled} images, 1 epoch + eval on 10,000), s | "
              f"{', '.join(str(x['wall_s']) for x in w['keep'])} | {', '.join(str(x['wall_s']) for x in w['avx2'])} | "
              f"**{med([x['wall_s'] for x in w['keep']]) / med([x['wall_s'] for x in w['avx2']]):.2f}x faster** |")
    md.append(f"| its top-1 after the epoch | {', '.join(str(x['top1']) for x in w['keep'])} | "
              f"{', '.join(str(x['top1']) for x in w['avx2'])} | |")
    units = {"matmul": "1024x1024 float32 matmul, GFLOP/s", "resnet18_train": "ResNet18 training step, img/s",
             "mv3_train": "MobileNetV3_small_x0_35 training step, img/s", "resnet18_eval": "ResNet18 no_grad forward, img/s"}
    for name in PARTS:
        md.append(f"| {units[name]} | {', '.join(map(str, rows[name]['keep']))} | "
                  f"{', '.join(map(str, rows[name]['avx2']))} | {med(rows[name]['avx2']) / med(rows[name]['keep']):.2f}x |")
    md.append(f"\nThe log line of the `avx2` arm: `{w['avx2'][-1]['log']}`; of the `keep` arm: `{w['keep'][-1]['log']}`.")
    common.write_results("mkl_dispatch", {"rounds": args.rounds, "labeled": args.labeled, "rows": rows,
                                          "loadavg": load, "flags": flags}, "\n".join(md) + "\n")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
