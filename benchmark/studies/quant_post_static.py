"""Post-training int8 (deploy/slim/quant_post_static.py) vs fp32: top-1, speed, size; calibration size; format.

    python benchmark/studies/quant_post_static.py -c CONFIG -o Global.pretrained_model=CKPT [-o ...] \
        [--calib 32,128,512] [--threads 1] [--speed_model MobileNetV3_large_x1_0 --speed_size 224]

Top-1 on every image of ``DataLoader.Eval.dataset`` (the test list) for the fp32 export (Paddle Inference,
oneDNN, and ONNX Runtime) and for int8 exports calibrated on each ``--calib`` count of training images
(QOperator form; QDQ at the largest count). Latency (median per batch) and throughput at batch 1 and 32 for
Paddle Inference fp32 (oneDNN), ONNX Runtime fp32 and ONNX Runtime int8, on the config's model and, for a
larger compute load, on ``--speed_model`` at ``--speed_size`` px with random weights (speed only). Paddle's
own ``paddle.quantization`` PTQ is tried on the config's model and its outcome recorded. Writes
benchmark/results/studies/quant_post_static.{md,json}.
"""
import argparse
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402  (ppssld first: the thread count before paddle)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True,
                   help="training config of the student (its Eval list is the test set)")
    p.add_argument("-o", "--override", action="append", default=[], help="Section.key=value overrides")
    p.add_argument("--calib", default="32,512", help="calibration image counts, comma-separated (default 32,512)")
    p.add_argument("--seeds", default="0,1,2", help="calibration sample seeds, comma-separated (default 0,1,2)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every runtime (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per runner per round (default 5)")
    p.add_argument("--rounds", type=int, default=5, help="alternated timing rounds (default 5)")
    p.add_argument("--speed_model", default="MobileNetV3_large_x1_0", help="zoo model for the speed-only rows")
    p.add_argument("--speed_size", type=int, default=224, help="input size of --speed_model (default 224)")
    p.add_argument("--model_note", default="", help="how the checkpoint was trained, for the results page")
    return p.parse_args()


def isa_flags() -> List[str]:
    """The CPU's SIMD flags that decide whether int8 can be faster (AVX2, AVX-512, VNNI, AMX)."""
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    keep = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return [f for f in keep if f in flags]


def timed(run: Callable[[np.ndarray], Any], batch: np.ndarray, repeats: int) -> List[float]:
    """Seconds of ``repeats`` runs of ``run(batch)``."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return times


def top1(run: Callable[[np.ndarray], Any], arrays: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    """Top-1 of ``run`` over every array."""
    preds = np.concatenate([np.asarray(run(arrays[i:i + batch])).argmax(1) for i in range(0, len(arrays), batch)])
    return float((preds == labels).mean())


def speeds(runners: Dict[str, Callable], shape: List[int], repeats: int, rounds: int) -> List[Dict[str, Any]]:
    """Batch 1 and 32 median latency and throughput of each runner, after 3 warm-up runs, over ``rounds``
    rounds that alternate the runners (a busy neighbour on the shared CPU then slows all of them alike)."""
    rows = []
    for bs in (1, 32):
        batch = np.random.RandomState(0).rand(bs, *shape).astype("float32")
        times: Dict[str, List[float]] = {name: [] for name in runners}
        for name, run in runners.items():
            timed(run, batch, 3)
        for _ in range(max(1, rounds)):
            for name, run in runners.items():
                times[name] += timed(run, batch, repeats)
        for name in runners:
            median = float(np.median(times[name]))
            rows.append({"runtime": name, "batch": bs, "latency_ms": median * 1000.0, "throughput_ips": bs / median})
    return rows


def last_line(exc: Exception) -> str:
    """The message line of a Paddle error (its last non-blank line before the hint), shortened."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("[")]
    found = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (found or lines or [""])[-1][:200]


def paddle_ptq_outcome(layer: Any, shape: List[int]) -> str:
    """Try Paddle's own PTQ (abs-max observers, convert, jit.save with a dynamic batch, Paddle Inference)."""
    import paddle
    from paddle.quantization import PTQ, QuantConfig
    from paddle.quantization.observers import AbsmaxObserver

    ptq = PTQ(QuantConfig(activation=AbsmaxObserver(quant_bits=8), weight=AbsmaxObserver(quant_bits=8)))
    observed = ptq.quantize(layer, inplace=False)
    observed(paddle.rand([4] + shape))
    converted = ptq.convert(observed, inplace=False)
    with tempfile.TemporaryDirectory() as out:
        spec = [paddle.static.InputSpec([None] + shape, "float32", "x")]
        try:
            paddle.jit.save(paddle.jit.to_static(converted, input_spec=spec, full_graph=True), out + "/m")
        except (ValueError, RuntimeError, TypeError) as exc:
            return f"jit.save with a dynamic batch failed: {type(exc).__name__}: {last_line(exc)}"
        config = paddle.inference.Config(out + "/m.json", out + "/m.pdiparams")
        config.disable_gpu()
        config.enable_mkldnn()
        predictor = paddle.inference.create_predictor(config)
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape([1] + shape)
        handle.copy_from_cpu(np.zeros([1] + shape, "float32"))
        try:
            predictor.run()
        except (ValueError, RuntimeError) as exc:
            return f"saved, but Paddle Inference fails: {type(exc).__name__}: {last_line(exc)}"
    return "ran"


def main() -> None:
    """Measure and write the results files."""
    args = parse_args()
    from ppssld.data.datasets.imagenet import build_dataset
    from ppssld.export.inference import export_model
    from ppssld.export.onnx import OnnxPredictor
    from ppssld.export.quantize import export_int8
    from ppssld.export.runtime import Predictor
    from ppssld.export.student import build_export_model
    from ppssld.utils.config import load_config

    config = load_config(args.config, args.override)
    counts = [int(c) for c in args.calib.split(",")]
    work = tempfile.mkdtemp(prefix="bench-quant-")
    fp32 = export_model(config, save_dir=os.path.join(work, "fp32"), with_hub=False, with_onnx=True)
    paddle_fp32 = Predictor(fp32.model_dir, enable_mkldnn=True, cpu_threads=args.threads)
    dataset = build_dataset(config["DataLoader"]["Eval"]["dataset"], "DataLoader.Eval.dataset")
    arrays = np.stack([paddle_fp32.preprocess(open(dataset.full_path(i), "rb").read()) for i in range(len(dataset))])
    labels = np.array([dataset.records[i].label for i in range(len(dataset))])
    shape = list(arrays.shape[1:])
    seeds = [int(v) for v in args.seeds.split(",")]
    variants = [(n, "qoperator", cal, seed) for cal in ("minmax", "percentile") for n in counts for seed in seeds]
    variants += [(max(counts), "qoperator", "entropy", seeds[0]), (max(counts), "qdq", "percentile", seeds[0])]
    params = os.path.join(fp32.model_dir, "inference.pdiparams")
    rows: List[Dict[str, Any]] = [{"model": "fp32 Paddle Inference (oneDNN)",
                                   "top1": top1(paddle_fp32.run, arrays, labels),
                                   "size_mb": os.path.getsize(params) / 1e6}]
    ort_fp32 = OnnxPredictor(fp32.onnx, threads=args.threads)
    rows.append({"model": "fp32 ONNX Runtime", "top1": top1(ort_fp32.run, arrays, labels),
                 "size_mb": os.path.getsize(fp32.onnx) / 1e6})
    int8_runs = {}
    for count, fmt, cal, seed in variants:
        start = time.perf_counter()
        res = export_int8(config, save_dir=os.path.join(work, f"int8_{fmt}_{cal}_{count}_{seed}"), calib_images=count,
                          fmt=fmt, calibration=cal, seed=seed)
        seconds = time.perf_counter() - start
        pred = Predictor(res.model_dir, cpu_threads=args.threads)
        int8_runs[(count, fmt, cal, seed)] = pred.run
        rows.append({"model": f"int8 ONNX Runtime, {fmt}, {cal}, {count} calibration images, seed {seed}",
                     "calib": count, "format": fmt, "calibration": cal, "seed": seed,
                     "top1": top1(pred.run, arrays, labels), "size_mb": res.int8_bytes / 1e6, "quantize_s": seconds})
    runners = {"Paddle Inference fp32 (oneDNN)": paddle_fp32.run, "ONNX Runtime fp32": ort_fp32.run,
               "ONNX Runtime int8 qoperator": int8_runs[(max(counts), "qoperator", "percentile", seeds[0])],
               "ONNX Runtime int8 qdq": int8_runs[(max(counts), "qdq", "percentile", seeds[0])]}
    speed = speeds(runners, shape, args.repeats, args.rounds)
    layer, _, _ = build_export_model(config)
    ptq = paddle_ptq_outcome(layer, shape)
    big = speed_only(args, work)
    payload = {"settings": vars(args), "isa_flags": isa_flags(), "test_images": int(len(arrays)),
               "accuracy": rows, "speed": speed, "speed_large": big, "paddle_quantization": ptq}
    common.write_results("quant_post_static", payload, markdown(payload, config), common.results_dir(__file__))


def speed_only(args: argparse.Namespace, work: str) -> Dict[str, Any]:
    """fp32 vs int8 timings of ``--speed_model`` with random weights (calibrated on random images)."""
    import paddle

    from ppssld.arch.zoo import build_backbone
    from ppssld.export.inference import save_inference_model
    import paddle2onnx

    from ppssld.export.onnx import OnnxPredictor
    from ppssld.export.outputs import ScoredModel
    from ppssld.export.quantize import QUANT_OPSET, quantize_onnx

    paddle.seed(0)
    layer = build_backbone(args.speed_model, class_num=1000)
    layer.eval()
    shape = [3, args.speed_size, args.speed_size]
    folder = os.path.join(work, "speed")
    os.makedirs(folder)
    save_inference_model(ScoredModel(layer, "softmax"), shape, os.path.join(folder, "inference"))
    onnx_path = os.path.join(folder, "fp32.onnx")
    paddle2onnx.export(os.path.join(folder, "inference.json"), os.path.join(folder, "inference.pdiparams"),
                       save_file=onnx_path, opset_version=QUANT_OPSET, enable_onnx_checker=True,
                       optimize_tool="onnxoptimizer", verbose=False)
    rng = np.random.RandomState(1)
    batches = [rng.rand(8, *shape).astype("float32") for _ in range(4)]
    runners = {"ONNX Runtime fp32": OnnxPredictor(onnx_path, threads=args.threads).run}
    for fmt in ("qoperator", "qdq"):
        out = os.path.join(folder, f"int8_{fmt}.onnx")
        quantize_onnx(onnx_path, out, batches, fmt)
        runners[f"ONNX Runtime int8 {fmt}"] = OnnxPredictor(out, threads=args.threads).run
    import paddle.inference as pi

    config = pi.Config(os.path.join(folder, "inference.json"), os.path.join(folder, "inference.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(args.threads)
    predictor = pi.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output = predictor.get_output_handle(predictor.get_output_names()[0])

    def paddle_run(batch: np.ndarray) -> np.ndarray:
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(batch)
        predictor.run()
        return output.copy_to_cpu()

    runners = {"Paddle Inference fp32 (oneDNN)": paddle_run, **runners}
    sizes = {name: os.path.getsize(os.path.join(folder, name)) / 1e6 for name in os.listdir(folder)
             if name.endswith(".onnx")}
    return {"model": args.speed_model, "size": args.speed_size, "onnx_mb": sizes,
            "rows": speeds(runners, shape, max(1, args.repeats // 2), args.rounds)}


def markdown(payload: Dict[str, Any], config: Dict[str, Any]) -> str:
    """The results page."""
    lines = [f"Checkpoint: {payload['settings']['model_note']}", ""] if payload["settings"]["model_note"] else []
    lines += [f"CPU SIMD flags: {', '.join(payload['isa_flags'])}. Test images: {payload['test_images']} "
             f"(`DataLoader.Eval.dataset`); model: {config['Arch'].get('name')}; threads: "
             f"{payload['settings']['threads']}.", "", "## Accuracy and size", "",
             "| model | top-1 | size (MB) | quantize (s) |", "|---|---|---|---|"]
    base = payload["accuracy"][0]["top1"]
    for row in payload["accuracy"]:
        delta = "" if row is payload["accuracy"][0] else f" ({(row['top1'] - base) * 100:+.2f})"
        lines.append(f"| {row['model']} | {row['top1'] * 100:.2f}%{delta} | {row['size_mb']:.2f} | "
                     f"{row.get('quantize_s', 0):.1f} |")
    lines += ["", "Per calibration method and count, over the seeds (top-1 change vs fp32, points):", "",
              "| calibration | images | mean | worst | best |", "|---|---|---|---|---|"]
    groups: Dict[Any, List[float]] = {}
    for row in payload["accuracy"][2:]:
        if row["format"] == "qoperator" and row["calibration"] in ("minmax", "percentile"):
            groups.setdefault((row["calibration"], row["calib"]), []).append((row["top1"] - base) * 100)
    lines += [f"| {cal} | {n} | {np.mean(v):+.2f} | {min(v):+.2f} | {max(v):+.2f} |"
              for (cal, n), v in groups.items()]
    lines += ["", "## Speed, this model", "", "| runtime | batch | latency (ms) | img/s |", "|---|---|---|---|"]
    lines += [f"| {r['runtime']} | {r['batch']} | {r['latency_ms']:.2f} | {r['throughput_ips']:.0f} |"
              for r in payload["speed"]]
    big = payload["speed_large"]
    lines += ["", f"## Speed, {big['model']} at {big['size']} px (random weights)", "",
              "| runtime | batch | latency (ms) | img/s |", "|---|---|---|---|"]
    lines += [f"| {r['runtime']} | {r['batch']} | {r['latency_ms']:.2f} | {r['throughput_ips']:.0f} |"
              for r in big["rows"]]
    lines += ["", "ONNX sizes (MB): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(big["onnx_mb"].items())), "",
              f"Paddle's own `paddle.quantization` PTQ on this model: {payload['paddle_quantization']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
