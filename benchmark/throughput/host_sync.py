"""Host syncs in the training loop: this tree's ``Trainer`` against a baseline source tree, side by side.

The baseline is a copy of the code before issue 15 point 5 (``git archive <commit> | tar -x -C DIR``),
whose loop read every loss part, the non-finite check and the train metric to the host on every
step; this tree reads them once per ``Global.print_batch_step``. Both run the real
``Trainer.train_one_epoch`` (student CE + TopkAcc, and distillation ResNet18 -> MobileNetV3_small_x0_35
with JS + DistillationTopkAcc) on the same synthetic batches. Every measurement runs in a fresh
process with its tree first on ``sys.path``; rounds alternate the trees so that noise from other
processes hits both alike, and the median round is reported.

Usage (also ``train_throughput.py --host-sync --baseline-src DIR``):
    python benchmark/throughput/host_sync.py --baseline-src /tmp/main-copy [--rounds 3] [--steps 20] [--batch 64]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# benchmark.common (which imports ppssld) is imported in run() only: a --worker must import the ppssld of --src
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARMS = ("student_ce", "distillation")
WARMUP_STEPS = 2


def _measure(arm: str, batch: int, steps: int, print_step: int) -> Dict[str, float]:
    """img/s of ``Trainer.train_one_epoch`` over ``steps`` batches (after a warm-up epoch), in this process."""
    import paddle

    from ppssld.arch.distillation import DistillationModel
    from ppssld.arch.zoo import build_backbone
    from ppssld.engine.checkpoint import Checkpointer
    from ppssld.engine.trainer import Trainer
    from ppssld.loss import build_loss
    from ppssld.metric import build_metrics
    from ppssld.optim import build_optimizer

    paddle.seed(0)
    if arm == "student_ce":
        model = build_backbone("MobileNetV3_small_x0_35", class_num=10)
        loss = build_loss([{"CELoss": {"weight": 1.0}}])
        metrics = build_metrics([{"TopkAcc": {"topk": [1, 5]}}], "Metric.Train")
    else:
        model = DistillationModel({"Teacher": build_backbone("ResNet18", class_num=10),
                                   "Student": build_backbone("MobileNetV3_small_x0_35", class_num=10)},
                                  frozen=["Teacher"], infer_model_name="Student")
        loss = build_loss([{"JSDivLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}])
        metrics = build_metrics([{"DistillationTopkAcc": {"model_key": "Student", "topk": [1, 5]}}], "Metric.Train")
    optimizer, scheduler = build_optimizer(
        {"name": "Momentum", "momentum": 0.9, "lr": {"name": "Cosine", "learning_rate": 0.01}},
        list(model.named_parameters()), epochs=2, steps_per_epoch=steps, where="Optimizer")
    batches = [(paddle.rand([batch, 3, 32, 32]), paddle.randint(0, 10, [batch])) for _ in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, [batches[i % 4] for i in range(WARMUP_STEPS)], None, loss, optimizer, scheduler,
                          Checkpointer(tmp), 2, train_metrics=metrics, print_batch_step=print_step)
        trainer.train_one_epoch(1)
        trainer.train_loader = [batches[i % 4] for i in range(steps)]
        tic = time.perf_counter()
        trainer.train_one_epoch(2)
        seconds = time.perf_counter() - tic
    return {"img_s": batch * steps / seconds, "seconds": seconds}


def _run_worker(src: str, arm: str, args: argparse.Namespace) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--src", src, "--arm", arm,
           "--batch", str(args.batch), "--steps", str(args.steps), "--print-step", str(args.print_step)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=src)
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {src} ({arm}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _markdown(args: argparse.Namespace, med: Dict[str, Dict[str, float]], baseline: str) -> str:
    rows = []
    for arm in ARMS:
        base, now = med["baseline"][arm], med["current"][arm]
        rows.append(f"| {arm} | {base:.1f} | {now:.1f} | {now / base:.3f} |")
    return ("| arm (real `Trainer.train_one_epoch`) | baseline: read every step (img/s) | this tree: read every "
            "print step (img/s) | ratio |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"Baseline source: `{baseline}`. Batch {args.batch} of 32x32 synthetic images, {args.steps} timed steps "
            f"after a {WARMUP_STEPS}-step warm-up epoch, `print_batch_step` {args.print_step}, train metric top-1/5 "
            f"on, {args.rounds} rounds alternating the trees (medians). On this CPU a host read is a copy of a "
            f"finished value, not a wait for a queue of kernels, so the gain expected here is small: the change "
            f"is meant for a GPU, where each read stalls the device until every queued kernel has run. No GPU "
            f"was available, so that gain is not measured.\n")


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Alternate the two trees over ``args.rounds`` rounds; write ``host_sync.{json,md}`` (results/throughput/)."""
    from benchmark import common

    baseline = os.path.abspath(args.baseline_src)
    if not os.path.isfile(os.path.join(baseline, "ppssld", "engine", "trainer.py")):
        raise SystemExit(f"--baseline-src {baseline}: no ppssld/engine/trainer.py there (make one with "
                         f"`git archive <commit> | tar -x -C DIR`)")
    rounds: List[Dict[str, Any]] = []
    for r in range(args.rounds):
        row: Dict[str, Any] = {"round": r}
        for tree, src in (("baseline", baseline), ("current", ROOT)) if r % 2 == 0 else (
                ("current", ROOT), ("baseline", baseline)):
            for arm in ARMS:
                row[f"{tree}/{arm}"] = _run_worker(src, arm, args)["img_s"]
        rounds.append(row)
        print(f"round {r}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "round"), flush=True)
    med = {tree: {arm: statistics.median(row[f"{tree}/{arm}"] for row in rounds) for arm in ARMS}
           for tree in ("baseline", "current")}
    md = _markdown(args, med, args.baseline_src)
    common.write_results("host_sync", {"batch": args.batch, "steps": args.steps, "print_batch_step": args.print_step,
                                       "baseline_src": args.baseline_src, "rounds": rounds, "median": med}, md,
                         common.results_dir(__file__))
    print(md)
    return med


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this benchmark takes (shared with ``train_throughput.py --host-sync``)."""
    parser.add_argument("--baseline-src", help="a source tree of the code to compare against (required)")
    parser.add_argument("--print-step", type=int, default=10, help="Global.print_batch_step (PaddleClas's 10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, args.src)
        print(json.dumps(_measure(args.arm, args.batch, args.steps, args.print_step)))
        return
    if not args.baseline_src:
        parser.error("--baseline-src DIR is required")
    run(args)


if __name__ == "__main__":
    main()
