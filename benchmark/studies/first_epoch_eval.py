"""Why the main job's first distillation epoch evaluates low: BatchNorm statistics or the weights themselves?

Trains the distillation stage's first epoch exactly as the main job does (its own ``config.yaml``, the
schedule spanning all its epochs), then evaluates the student on the test set two ways:
(1) as the trainer does (running BatchNorm statistics), (2) after re-estimating the running statistics
at the current weights (no weight change: ``no_grad`` forward passes over training batches).
If (2) recovers what (1) lost, the low number comes
from statistics that trail weights moving fast at the warm-up's peak learning rate, not from a bad
student.

Usage: python benchmark/studies/first_epoch_eval.py \
    --config output/fashion_mnist_ssld/distill/DistillationModel/config.yaml
"""
import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402  (ppssld first: the thread count before paddle)
import paddle  # noqa: E402

from ppssld.utils.config import load_config  # noqa: E402
from ppssld.engine.builder import build_trainer  # noqa: E402
from ppssld.engine.evaluator import evaluate  # noqa: E402

BN = (paddle.nn.BatchNorm2D, paddle.nn.BatchNorm1D, paddle.nn.BatchNorm)


def _student(model):
    return getattr(model, "Student", model)


@paddle.no_grad()
def reestimate_bn(model, loader, batches: int) -> None:
    """Forward ``batches`` training batches with the student's BatchNorm in train mode and no weight change."""
    student = _student(model)
    student.train()
    for step, (images, _labels) in enumerate(loader):
        if step >= batches:
            break
        student(images)
    student.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--bn-batches", type=int, default=40)
    args = parser.parse_args()
    out = os.path.join(common.ROOT, "output", "first_epoch_eval")
    config = load_config(args.config, [f"Global.output_dir={out}", "Global.checkpoints=null",
                                       "Global.eval_during_train=False"])
    tic = time.time()
    trainer = build_trainer(config)
    trainer.fit(stop_after_epoch=1)
    lr_end = float(trainer.optimizer.get_lr())
    model = trainer.model
    model.eval()
    running = evaluate(model, trainer.eval_loader, trainer.eval_metrics, trainer.eval_loss, epoch=1)
    bn_layers = [m for m in _student(model).sublayers() if isinstance(m, BN)]
    saved = [(m._mean.numpy().copy(), m._variance.numpy().copy()) for m in bn_layers]
    reestimate_bn(model, trainer.train_loader, args.bn_batches)
    model.eval()
    fresh = evaluate(model, trainer.eval_loader, trainer.eval_metrics, trainer.eval_loss, epoch=1)
    drift = max(float(abs(m._variance.numpy() / (v + 1e-5) - 1).max()) for m, (_, v) in zip(bn_layers, saved))
    rows = [("running statistics (what the trainer reports)", running),
            (f"statistics re-estimated on {args.bn_batches} training batches, same weights", fresh)]
    lines = [f"Distillation epoch 1 of {trainer.epochs}, learning rate at its end {lr_end:.4f} "
             f"(warm-up peak); student test top-1:", "", "| BatchNorm statistics | top-1 | eval CE loss |",
             "|---|---|---|"]
    for name, res in rows:
        loss = next((v for k, v in res.items() if k.endswith("loss") or k == "loss"), float("nan"))
        lines.append(f"| {name} | {100 * res['top1']:.2f}% | {loss:.3f} |")
    lines += ["", f"Largest ratio between a re-estimated and a running variance, minus 1: {drift:.2f}.",
              f"Wall time: {time.time() - tic:.0f} s. Config: `{args.config}`."]
    common.write_results("first_epoch_eval", {"rows": {n: r for n, r in rows}, "variance_drift": drift,
                                              "lr_end_epoch1": lr_end}, "\n".join(lines) + "\n",
                         common.results_dir(__file__))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
