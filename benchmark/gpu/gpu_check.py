"""One command for a GPU (issue 15 point 6); ``benchmark/gpu/gpu_check.sh`` wraps it.

On a machine with a GPU, side by side in one run:

* training with the real engine, in float32, AMP O1 and AMP O2, of three arms built from the shipped
  PaddleClas-schema quick-start configs: online distillation (ResNet18 -> MobileNetV3_small_x0_35, JS),
  distillation from the teacher's soft-label cache (``tools/cache_soft_labels.py``, then
  ``Global.soft_label_cache``) and student-only CE; img/s (epochs after the first) and peak GPU
  memory (``paddle.device.cuda.max_memory_allocated``);
* the cache's generation time;
* the AMP-trained students evaluated under AMP, in float32 and through their exported Paddle
  Inference model: the three top-1 must agree within 1e-2;
* the Paddle Inference predictor of the exported AMP O2 student on the GPU, without TensorRT and
  with TensorRT fp32 / fp16: img/s, p50 latency, top-1.

It writes ``benchmark/results/gpu/gpu_check.md`` and ``.json`` with the card's name. Data are synthetic
class-coloured 32x32 images written to ``--work`` (the throughput and parity checks do not need real
images). ``--dry-run`` (no GPU needed): every step builds -- configs load, models build, tools parse,
tiny 1-step runs on the CPU -- nothing is timed, and the report (``gpu_check_dry_run.md``) says so.
A failed step is reported as FAILED and the exit status is 1; bad arguments exit 2.

Usage: benchmark/gpu/gpu_check.sh [--dry-run] [--work DIR] [--epochs 3] [--batch 128] [--train-images 8192]
"""
import argparse
import logging
import os
import sys
import tempfile
from typing import Any, Dict, List

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402
from benchmark.gpu import gpu_check_steps as steps  # noqa: E402

DRY_NOTE = ("**DRY RUN on the CPU: nothing was measured.** Every step was built (configs loaded, models "
            "built, tools parsed, tiny 1-step runs); no figure here is a measurement. Run "
            "`benchmark/gpu/gpu_check.sh` on a machine with a GPU for the figures.")


def gpu_name() -> str:
    """The card's name ('' when Paddle sees no GPU)."""
    import paddle

    if not paddle.device.is_compiled_with_cuda() or paddle.device.cuda.device_count() == 0:
        return ""
    return paddle.device.cuda.get_device_name()


def _figures(item: Dict[str, Any]) -> str:
    keys = [k for k in item if k not in ("step", "status", "detail")]
    return ", ".join(f"{k} {item[k]:.4g}" if isinstance(item[k], float) else f"{k} {item[k]}" for k in keys)


def markdown(rows: List[Dict[str, Any]], card: str, dry_run: bool, args: argparse.Namespace) -> str:
    """The report: a note, then one table row per step."""
    head = DRY_NOTE if dry_run else (f"Card: **{card}**. Synthetic data: {args.train_images} labeled + "
                                     f"{args.train_images} unlabeled train images, {args.val_images} val, "
                                     f"{args.epochs} epochs, batch {args.batch}; img/s over the epochs after "
                                     f"the first.")
    failed = [r["step"] for r in rows if r["status"] != "ok"]
    lines = [head, "", f"Steps: {len(rows)}, failed: {len(failed)}" + (f" ({', '.join(failed)})" if failed else ""),
             "", "| step | status | figures | detail |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {_figures(r) or '-'} | {r['detail']} |" for r in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: List[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="build every step on the CPU; time nothing")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--results-dir", default=common.results_dir(__file__),
                        help="where gpu_check[_dry_run].md/.json go (default: benchmark/results/gpu/)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=8192, help="labeled (and as many unlabeled) images")
    parser.add_argument("--val-images", type=int, default=2048)
    parser.add_argument("--views", type=int, default=4, help="cache views")
    parser.add_argument("--topk", type=int, default=5, help="cache top-K")
    args = parser.parse_args(argv)
    for key in ("epochs", "batch", "train_images", "val_images", "views", "topk"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    return args


def main(argv: List[str] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    card = "none (dry run on the CPU)" if args.dry_run else gpu_name()
    if not card:
        print("gpu_check: no GPU visible to Paddle (a CPU-only paddle build, or no device): run with --dry-run to "
              "check that every step builds", file=sys.stderr)
        return 2
    work = args.work or tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(work, exist_ok=True)
    if args.dry_run:
        plan = steps.Plan(work, True, "cpu", train_images=16, val_images=8, unlabeled_images=8, epochs=1, batch=8,
                          views=1, topk=2)
    else:
        plan = steps.Plan(work, False, "gpu", args.train_images, args.val_images, args.train_images, args.epochs,
                          args.batch, args.views, args.topk)
    rows = steps.run_all(plan)
    md = markdown(rows, card, args.dry_run, args)
    name = "gpu_check_dry_run" if args.dry_run else "gpu_check"
    sizes = {k: v for k, v in vars(plan).items() if isinstance(v, (int, str))}
    common.write_results(name, {"card": card, "dry_run": args.dry_run, "measured": not args.dry_run,
                                "work": work, "plan": sizes, "steps": rows}, md, args.results_dir)
    print(md)
    print(f"written: {os.path.join(args.results_dir, name)}.md/.json")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
