"""Training throughput: student alone (CE) vs DistillationModel (frozen teacher), side by side.

The teacher needs no backward pass, so distillation should reach at least 90% of
``1 / (1/student_train + 1/teacher_infer)``. Rounds alternate the three measurements so
noise from other processes hits them alike; the median round is reported.

Usage: python benchmark/train_throughput.py [--rounds 3] [--steps 8] [--batch 128]
       python benchmark/train_throughput.py --host-sync --baseline-src DIR   (see host_sync.py)
"""
import argparse
import statistics
import time

import common  # noqa: F401  (sets sys.path)
import host_sync
import paddle

from ppssld.arch.distillation import DistillationModel
from ppssld.arch.zoo import build_backbone
from ppssld.loss import build_loss


def _train_rate(model, loss_fn, batch, steps, distill):
    opt = paddle.optimizer.Momentum(0.01, parameters=[p for p in model.parameters() if not p.stop_gradient])
    x = paddle.rand([batch, 3, 32, 32])
    y = paddle.randint(0, 10, [batch])
    model.train()
    for i in range(steps + 2):
        if i == 2:
            tic = time.perf_counter()
        out = model(x)
        loss = loss_fn(out, y)["loss"]
        loss.backward()
        opt.step()
        opt.clear_grad()
    return batch * steps / (time.perf_counter() - tic)


@paddle.no_grad()
def _infer_rate(model, batch, steps):
    x = paddle.rand([batch, 3, 32, 32])
    model.eval()
    for i in range(steps + 2):
        if i == 2:
            tic = time.perf_counter()
        model(x)
    return batch * steps / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--host-sync", action="store_true",
                        help="instead: the real Trainer loop of this tree vs --baseline-src, student CE and "
                             "distillation arms side by side (writes results/host_sync.*)")
    host_sync.add_arguments(parser)
    args = parser.parse_args()
    if args.host_sync:
        if not args.baseline_src:
            parser.error("--host-sync needs --baseline-src DIR")
        host_sync.run(args)
        return
    paddle.seed(0)
    student = build_backbone("MobileNetV3_small_x0_35", class_num=10)
    teacher = build_backbone("ResNet18", class_num=10)
    distill = DistillationModel({"Teacher": build_backbone("ResNet18", class_num=10),
                                 "Student": build_backbone("MobileNetV3_small_x0_35", class_num=10)},
                                frozen=["Teacher"], infer_model_name="Student")
    ce = build_loss([{"CELoss": {"weight": 1.0}}])
    js = build_loss([{"JSDivLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}])
    rows = []
    for r in range(args.rounds):
        s = _train_rate(student, ce, args.batch, args.steps, False)
        t = _infer_rate(teacher, args.batch, args.steps)
        d = _train_rate(distill, js, args.batch, args.steps, True)
        bound = 1.0 / (1.0 / s + 1.0 / t)
        rows.append({"round": r, "student_train": s, "teacher_infer": t, "distill_train": d, "bound": bound,
                     "ratio": d / bound})
        print(f"round {r}: student train {s:.1f} img/s, teacher infer {t:.1f} img/s, distill train {d:.1f} "
              f"img/s, bound {bound:.1f}, ratio {d / bound:.3f}", flush=True)
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0] if k != "round"}
    verdict = "PASS" if med["ratio"] >= 0.9 else "FAIL"
    md = ("| measure | img/s (median of rounds) |\n|---|---|\n"
          f"| (a) student MobileNetV3_small_x0_35 train, CE | {med['student_train']:.1f} |\n"
          f"| teacher ResNet18 inference (no grad) | {med['teacher_infer']:.1f} |\n"
          f"| (b) DistillationModel ResNet18 -> MobileNetV3_small_x0_35 train, JS | {med['distill_train']:.1f} |\n"
          f"| no-backward bound 1/(1/a + 1/teacher) | {med['bound']:.1f} |\n\n"
          f"Ratio (b) / bound: **{med['ratio']:.3f}** (target >= 0.9: {verdict}). 32x32 inputs, batch "
          f"{args.batch}, {args.steps} timed steps per measure after 2 warm-up steps, {args.rounds} interleaved "
          f"rounds; synthetic tensors (the data loader is measured in loader_throughput).\n")
    common.write_results("train_throughput", {"batch": args.batch, "steps": args.steps, "rounds": rows,
                                              "median": med, "verdict": verdict}, md)
    print(md)


if __name__ == "__main__":
    main()
