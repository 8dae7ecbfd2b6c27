"""Classify images with an exported model (Paddle Inference).

python deploy/python/predict_cls.py --model_dir inference/MobileNetV3_small_x0_35_ssld_infer --image img.jpg
PATH may be an image, a folder or a list file; --json OUT writes one result per image; --benchmark
prints latency p50/p95 and throughput. Exit status 1 when an image could not be classified.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.data.image import read_bytes  # noqa: E402
    from ppssld.utils import cli  # noqa: E402
    from ppssld.export.runtime import Predictor, benchmark, list_images, predict_paths  # noqa: E402
    from ppssld.utils.io import atomic_write_json  # noqa: E402


def str2bool(text: str) -> bool:
    """``true/false/1/0/yes/no`` -> bool."""
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="Classify images with an exported ppssld/PaddleClas model")
    p.add_argument("--model_dir", required=True, help="the exported ..._infer folder (required)")
    p.add_argument("--image", required=True, help="an image, a folder of images or a list file "
                   "(required)")
    p.add_argument("--image_root", default=None, help="base of relative paths in a list file (default: its folder)")
    p.add_argument("--json", default=None, help="write [{path, class_ids, scores, "
                   "label_names}] to this JSON file (default: printed only)")
    p.add_argument("--batch_size", type=int, default=1, help="images per predictor run (default 1)")
    p.add_argument("--top_k", type=int, default=None,
                   help="classes printed per image (default: inference.yml PostProcess.Topk.topk; a multi-label "
                        "model lists every label at or above its PostProcess.MultiLabelThreshOutput threshold instead)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where to run (default cpu)")
    p.add_argument("--enable_mkldnn", type=str2bool, default=True, help="oneDNN on CPU (true/false; default true)")
    p.add_argument("--cpu_threads", type=int, default=1, help="CPU math threads of the predictor (default 1)")
    p.add_argument("--use_tensorrt", type=str2bool, default=False, help="TensorRT on GPU (true/false; default false)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="TensorRT precision (default fp32)")
    p.add_argument("--trt_shape_range", default=None, help="min:opt:max input dims, e.g. "
                   "1,3,224,224:8,3,224,224:16,3,224,224 (default: batch 1..batch_size)")
    p.add_argument("--gpu_id", type=int, default=0, help="GPU index with --device gpu (default 0)")
    p.add_argument("--gpu_mem", type=int, default=500, help="initial GPU memory pool in MB (default 500)")
    p.add_argument("--ir_optim", type=str2bool, default=True, help="Paddle Inference graph optimisations "
                   "(true/false; default true)")
    p.add_argument("--benchmark", action="store_true", help="time the model after warm-up and print latency "
                   "p50/p95 and throughput (default: off)")
    p.add_argument("--warmup", type=int, default=3, help="untimed passes over all images before "
                   "--benchmark times them (default 3)")
    p.add_argument("--repeats", type=int, default=10, help="timed passes over all images with --benchmark "
                   "(default 10)")
    return cli.add_debug_flag(p).parse_args()


def main() -> int:
    """Run the predictor; returns the exit status."""
    args = parse_args()
    predictor = Predictor(args.model_dir, device=args.device, enable_mkldnn=args.enable_mkldnn,
                          cpu_threads=args.cpu_threads, batch_size=args.batch_size,
                          use_tensorrt=args.use_tensorrt, precision=args.precision,
                          trt_shape_range=args.trt_shape_range, gpu_id=args.gpu_id, gpu_mem_mb=args.gpu_mem,
                          ir_optim=args.ir_optim)
    paths = list_images(args.image, args.image_root)
    results = predict_paths(predictor, paths, args.top_k)
    for res in results:
        if "error" in res:
            print(f"{res['path']}:\tERROR {res['error']}")
        else:
            scores = ", ".join(f"{s:.4f}" for s in res["scores"])
            print(f"{res['path']}:\tclass id(s): {res['class_ids']}, score(s): [{scores}], "
                  f"label_name(s): {res['label_names']}")
    if args.json:
        atomic_write_json(args.json, results)
    if args.benchmark:
        good = [r["path"] for r in results if "error" not in r]
        arrays = [predictor.preprocess(read_bytes(p)) for p in good]
        stats = benchmark(predictor.run, arrays, predictor.batch_size, args.warmup, args.repeats) if arrays else {}
        print("benchmark: " + json.dumps(stats))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    cli.run(main)
