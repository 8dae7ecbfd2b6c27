"""CPU throughput of an exported student: dygraph eval vs Paddle Inference (oneDNN off/on) vs onnxruntime.

python benchmark/throughput/export_throughput.py [--model MobileNetV3_large_x1_0] [--batch_size 8] [--threads 1]

Every runtime gets the same preprocessed images in the same batches, after the same warm-up.
The weights are random (He-scaled), which does not change speed. Writes
benchmark/results/throughput/export_throughput.json and .md.
"""
import argparse
import datetime
import os
import sys
import tempfile
from typing import Any, Dict, List

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# benchmark.common (which imports ppssld) is imported once --threads is in the environment


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="MobileNetV3_large_x1_0")
    p.add_argument("--class_num", type=int, default=1000)
    p.add_argument("--size", type=int, default=224, help="crop size (images are resized to size*256/224 first)")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    return p.parse_args()


def make_inputs(root: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Write synthetic images, a config and a Student.* checkpoint; return their paths and the config."""
    import cv2
    import numpy as np
    import paddle

    from ppssld.arch.zoo import build_backbone

    rng = np.random.RandomState(0)
    images = []
    for i in range(args.images):
        path = os.path.join(root, f"img_{i:03d}.jpg")
        cv2.imwrite(path, rng.randint(0, 256, (args.size * 8 // 7 + 20, args.size * 8 // 7, 3), dtype=np.uint8))
        images.append(path)
    layer = build_backbone(args.model, class_num=args.class_num)
    state = {}
    for key, value in layer.state_dict().items():
        arr = value.numpy()
        if arr.ndim >= 2:
            arr = rng.randn(*arr.shape).astype("float32") * np.sqrt(2.0 / np.prod(arr.shape[1:]))
        state[f"Student.{key}"] = paddle.to_tensor(arr)
    ckpt = os.path.join(root, "best_model.pdparams")
    paddle.save(state, ckpt)
    ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
           {"ResizeImage": {"resize_short": args.size * 256 // 224}}, {"CropImage": {"size": args.size}},
           {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                               "order": ""}}]
    config = {"Global": {"image_shape": [3, args.size, args.size], "save_inference_dir": os.path.join(root, "out")},
              # logits out (no PaddleClas softmax), so the diffs to dygraph below stay diffs of logits
              "Arch": {"name": "DistillationModel", "freeze_params_list": [True, False], "infer_model_name": "Student",
                       "infer_add_softmax": False,
                       "models": [{"Teacher": {"name": "ResNet50_vd", "class_num": args.class_num,
                                               "pretrained": "never_loaded.pdparams"}},
                                  {"Student": {"name": args.model, "class_num": args.class_num}}]},
              "DataLoader": {"Eval": {"dataset": {"transform_ops": ops}}}}
    return {"images": images, "ckpt": ckpt, "config": config}


def measure(args: argparse.Namespace, root: str) -> Dict[str, Any]:
    """Export, then time each runtime on the same batches; also report parity with dygraph."""
    import numpy as np
    import paddle

    from ppssld.export.inference import export_model
    from ppssld.export.onnx import OnnxPredictor, OnnxUnavailable
    from ppssld.data.image import read_bytes
    from ppssld.export.runtime import Predictor, benchmark
    from ppssld.export.student import build_export_model

    inputs = make_inputs(root, args)
    result = export_model(inputs["config"], weights=inputs["ckpt"], with_hub=False, with_onnx=True)
    base = Predictor(result.model_dir, enable_mkldnn=False, cpu_threads=args.threads, batch_size=args.batch_size)
    arrays = [base.preprocess(read_bytes(p)) for p in inputs["images"]]
    student, _, _ = build_export_model(inputs["config"], inputs["ckpt"])
    paddle.set_device("cpu")

    def dygraph(batch: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return student(paddle.to_tensor(batch)).numpy()

    runners = {"dygraph student (eval)": dygraph, "Paddle Inference, oneDNN off": base.run,
               "Paddle Inference, oneDNN on": Predictor(result.model_dir, enable_mkldnn=True, cpu_threads=args.threads,
                                                        batch_size=args.batch_size).run}
    try:
        runners["onnxruntime"] = OnnxPredictor(result.onnx, threads=args.threads).run
    except OnnxUnavailable as exc:
        print(f"onnxruntime skipped: {exc}")
    check = np.stack(arrays[:args.batch_size])
    reference = dygraph(check)
    rows: List[Dict[str, Any]] = []
    for name, run in runners.items():
        stats = benchmark(run, arrays, args.batch_size, args.warmup, args.repeats)
        out = run(check)
        stats.update({"runtime": name, "max_abs_logit": float(np.abs(reference).max()),
                      "max_abs_diff_vs_dygraph": float(np.abs(out - reference).max()),
                      "top1_agreement": float((out.argmax(1) == reference.argmax(1)).mean())})
        rows.append(stats)
        print(f"{name:32s} {stats['throughput_ips']:8.1f} img/s  p50 {stats['latency_ms_p50']:7.2f} ms  "
              f"p95 {stats['latency_ms_p95']:7.2f} ms  max|diff| {stats['max_abs_diff_vs_dygraph']:.2e}")
    return {"rows": rows, "paddle": paddle.__version__}


def machine() -> Dict[str, Any]:
    """benchmark/common.py's machine description plus the ONNX package versions."""
    from benchmark import common

    versions = {}
    for mod in ("onnxruntime", "paddle2onnx"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {**common.machine(), **versions}


def main() -> None:
    """Run the benchmark and write the results files."""
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before paddle is imported
    from benchmark import common
    from ppssld.utils.io import atomic_write_json, atomic_write_text

    results = common.results_dir(__file__)

    with tempfile.TemporaryDirectory() as root:
        measured = measure(args, root)
    payload = {"command": "python " + common.command_line(),
               "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": machine(),
               "settings": {k: v for k, v in vars(args).items()}, "results": measured["rows"]}
    os.makedirs(results, exist_ok=True)
    atomic_write_json(os.path.join(results, "export_throughput.json"), payload)
    mach = payload["machine"]
    lines = [f"# Export throughput ({args.model}, {args.size}x{args.size}, batch {args.batch_size}, "
             f"{args.threads} thread(s))", "",
             f"Command: `{payload['command']}`  ", f"Machine: {mach['cpu']}, {mach['cores']} cores, paddle "
             f"{mach['paddle']}, onnxruntime {mach['onnxruntime']}, commit {mach['git_commit']}  ",
             f"Date: {payload['date']}", "",
             f"{args.images} synthetic JPEGs, preprocessed once; {args.warmup} warm-up and {args.repeats} timed "
             f"passes over the same batches for every runtime. Random (He-scaled) weights; dygraph logits "
             f"reach |{measured['rows'][0]['max_abs_logit']:.1f}|, so diffs are relative to that. "
             f"The 2 cores are shared with other jobs: expect noise.", "",
             "| runtime | images/s | p50 ms/batch | p95 ms/batch | max abs diff vs dygraph | top-1 agreement |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in measured["rows"]:
        lines.append(f"| {row['runtime']} | {row['throughput_ips']:.1f} | {row['latency_ms_p50']:.2f} | "
                     f"{row['latency_ms_p95']:.2f} | {row['max_abs_diff_vs_dygraph']:.2e} | "
                     f"{row['top1_agreement']:.2f} |")
    atomic_write_text(os.path.join(results, "export_throughput.md"), "\n".join(lines) + "\n")
    print(f"wrote {os.path.join(results, 'export_throughput.json')}")


if __name__ == "__main__":
    main()
