"""The frozen teacher in Paddle Inference (oneDNN) against dygraph, and what it buys online distillation.

Arms, measured side by side in alternated rounds (median round reported, same weights and batches):
* teacher forward, ResNet18 at 32 px (batch 64) and ResNet50_vd at 224 px (batch 16): dygraph ``no_grad``
  vs ``ppssld.teacher`` 's engines (the saved net in a Paddle Inference predictor with oneDNN, and the same
  net converted by paddle2onnx in ONNX Runtime); the largest softmax and logit differences on the batch;
* one training step of MobileNetV3_small_x0_35 at 32 px (batch 64, Momentum): CE alone (the limit with a
  free teacher), JS against a ResNet18 teacher in dygraph, in Paddle Inference and in ONNX Runtime.
  The whole step is timed (forward of both models, loss, backward, update), not the teacher alone.

Usage: python benchmark/throughput/teacher_engine.py [--rounds 3] [--seconds 4] [--big-seconds 8]
"""
import argparse
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402  (ppssld first: the thread count before paddle)
import numpy as np  # noqa: E402
import paddle  # noqa: E402

from ppssld.arch.distillation import DistillationModel
from ppssld.arch.zoo import build_backbone
from ppssld.loss import build_loss
from ppssld.teacher.choose import EngineTeacher
from ppssld.teacher.engines import LayerEngine, softmax_gap


def _rate(step, images: int, seconds: float) -> float:
    step()  # warm-up
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        done += images
    return done / (time.perf_counter() - start)


def _teacher_arms(name: str, size: int, batch: int, seconds: float) -> dict:
    paddle.seed(0)
    layer = build_backbone(name, class_num=1000 if size == 224 else 10)
    layer.eval()
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    threads = int(common.os.environ.get("OMP_NUM_THREADS", "1"))
    engine = LayerEngine(layer, name, threads=threads)
    onnx = LayerEngine(layer, name, threads=threads, kind="onnxruntime")
    out, out_onnx = engine(x), onnx(x)
    with paddle.no_grad():
        ref = layer(paddle.to_tensor(x)).numpy()

    def dygraph():
        with paddle.no_grad():
            layer(paddle.to_tensor(x)).numpy()

    return {"dygraph": lambda: _rate(dygraph, batch, seconds), "engine": lambda: _rate(lambda: engine(x), batch, seconds),
            "onnxruntime": lambda: _rate(lambda: onnx(x), batch, seconds),
            "softmax_gap": softmax_gap(out, ref), "logit_gap": float(np.abs(out - ref).max()),
            "onnx_softmax_gap": softmax_gap(out_onnx, ref), "onnx_logit_gap": float(np.abs(out_onnx - ref).max())}


def _train_arms(batch: int, seconds: float) -> dict:
    paddle.seed(1)
    teacher = build_backbone("ResNet18", class_num=10)
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = paddle.randint(0, 10, [batch])
    ce = build_loss([{"CELoss": {"weight": 1.0}}], "Loss.Train")
    js = build_loss([{"JSDivLoss": {"weight": 4.0, "model_name_pairs": [["Student", "Teacher"]]}}], "Loss.Train")

    def arm(kind: str):
        paddle.seed(2)
        student = build_backbone("MobileNetV3_small_x0_35", class_num=10)
        if kind.endswith("_static"):  # Global.to_static: the student's forward through paddle.jit.to_static
            paddle.jit.to_static(student, full_graph=False)
            kind = kind[: -len("_static")]
        if kind == "ce":
            model, loss_fn = student, ce
        else:
            model = DistillationModel({"Teacher": teacher, "Student": student}, frozen=["Teacher"],
                                      infer_model_name="Student")
            if kind in ("engine", "onnxruntime"):
                model.Teacher = EngineTeacher(teacher, LayerEngine(teacher, "Teacher", threads=int(
                    common.os.environ.get("OMP_NUM_THREADS", "1")), kind="paddle_inference" if kind == "engine"
                    else kind))
                model.Teacher.eval()
            loss_fn = js
        opt = paddle.optimizer.Momentum(0.01, parameters=[p for p in model.parameters() if not p.stop_gradient])
        model.train()

        def step():
            loss = loss_fn(model(x), y)["loss"]
            loss.backward()
            opt.step()
            opt.clear_grad()
            float(loss)
        return lambda: _rate(step, batch, seconds)

    return {k: arm(k) for k in ("ce", "dygraph", "engine", "onnxruntime", "ce_static", "engine_static")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (median reported)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per arm per round (32-px arms)")
    parser.add_argument("--big-seconds", type=float, default=8.0, help="seconds per arm per round (224-px teacher)")
    args = parser.parse_args()
    groups = {"ResNet18 32px b64": _teacher_arms("ResNet18", 32, 64, args.seconds),
              "ResNet50_vd 224px b16": _teacher_arms("ResNet50_vd", 224, 16, args.big_seconds),
              "train step MV3_small_x0_35 b64": _train_arms(64, args.seconds)}
    rates = {g: {k: [] for k, v in arms.items() if callable(v)} for g, arms in groups.items()}
    for _ in range(args.rounds):
        for group, arms in groups.items():
            for key in rates[group]:
                rates[group][key].append(arms[key]())
    med = {g: {k: statistics.median(v) for k, v in r.items()} for g, r in rates.items()}
    lines = ["| teacher forward | dygraph img/s | Paddle Inference img/s (x dygraph) | ONNX Runtime img/s (x dygraph) "
             "| max softmax diff PI / ORT | max logit diff PI / ORT |", "|---|---|---|---|---|---|"]
    for group in ("ResNet18 32px b64", "ResNet50_vd 224px b16"):
        m, arms = med[group], groups[group]
        lines.append(f"| {group} | {m['dygraph']:.1f} | {m['engine']:.1f} (**{m['engine'] / m['dygraph']:.2f}x**) | "
                     f"{m['onnxruntime']:.1f} ({m['onnxruntime'] / m['dygraph']:.2f}x) | "
                     f"{arms['softmax_gap']:.1e} / {arms['onnx_softmax_gap']:.1e} | "
                     f"{arms['logit_gap']:.1e} / {arms['onnx_logit_gap']:.1e} |")
    t = med["train step MV3_small_x0_35 b64"]
    lines += ["", "| training step, MobileNetV3_small_x0_35 at 32 px, batch 64 | img/s | / CE alone |", "|---|---|---|",
              f"| CE alone (no teacher: the limit) | {t['ce']:.1f} | 1.00 |",
              f"| JS, ResNet18 teacher in dygraph | {t['dygraph']:.1f} | {t['dygraph'] / t['ce']:.2f} |",
              f"| JS, ResNet18 teacher in Paddle Inference | {t['engine']:.1f} | **{t['engine'] / t['ce']:.2f}** |",
              f"| JS, ResNet18 teacher in ONNX Runtime | {t['onnxruntime']:.1f} | {t['onnxruntime'] / t['ce']:.2f} |",
              f"| CE alone, student `to_static` (Global.to_static) | {t['ce_static']:.1f} | "
              f"{t['ce_static'] / t['ce']:.2f} |",
              f"| JS, teacher in Paddle Inference, student `to_static` | {t['engine_static']:.1f} | "
              f"{t['engine_static'] / t['ce']:.2f} |",
              "", f"Median of {args.rounds} alternated rounds; each arm runs {args.seconds:g} s per round "
              f"({args.big_seconds:g} s for the 224-px teacher) after one warm-up step."]
    payload = {"rounds": rates, "median": med,
               "gaps": {g: {k: v for k, v in a.items() if not callable(v)} for g, a in groups.items()}}
    print("\n".join(lines))
    print(common.write_results("teacher_engine", payload, "\n".join(lines) + "\n", common.results_dir(__file__)))


if __name__ == "__main__":
    main()
