"""Loss study on the miniature ladder: step 3 (distillation on L) with five losses, two seeds each.

Same data, teacher, student, schedule and learning rate as the ladder's step 3 (``benchmark/ladder/classic.py``:
its data preparation, teacher and run folders are reused); only ``Loss.Train`` changes:

* ``js4``  - JSDivLoss x4 (SSLD's label-free loss, the ladder's default weight)
* ``dml``  - DistillationDMLLoss (PaddleClas's symmetric KL, label-free)
* ``kd``   - DistillationGTCELoss + KLDivLoss T=4 (Hinton KD)
* ``dkd``  - DistillationGTCELoss + DistillationDKDLoss (PaddleClas's config: T=1, alpha=1, beta=1)
* ``dist`` - DistillationGTCELoss + DistillationDISTLoss x2 (PaddleClas's config)

Every other option is the ladder's (``--scale``, ``--limit-train``, ``--seeds`` ...)::

    python benchmark/studies/loss_study.py --scale 0.15 --limit-train 10000 --limit-val 5000 --work ./output/loss_study

Writes ``benchmark/results/studies/loss_study.{md,json}``.
"""
import argparse
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402
from benchmark.ladder import classic as L  # noqa: E402

logger = logging.getLogger("ppssld.benchmark.loss_study")

PAIR = "model_name_pairs: [[Student, Teacher]]"
GT = "{DistillationGTCELoss: {weight: 1.0, model_names: [Student]}}"
ARMS: Dict[str, Tuple[str, str]] = {
    "js4": ("JSDivLoss x4 (SSLD)", f"[{{JSDivLoss: {{weight: 4.0, {PAIR}}}}}]"),
    "dml": ("symmetric KL (DistillationDMLLoss)", f"[{{DistillationDMLLoss: {{weight: 1.0, {PAIR}}}}}]"),
    "kd": ("CE + KL T=4 (KD)", f"[{GT}, {{KLDivLoss: {{weight: 1.0, temperature: 4.0, {PAIR}}}}}]"),
    "dkd": ("CE + DKD (T=1, a=1, b=1)", f"[{GT}, {{DistillationDKDLoss: {{weight: 1.0, temperature: 1.0, "
                                        f"alpha: 1.0, beta: 1.0, {PAIR}}}}}]"),
    "dist": ("CE + DIST x2", f"[{GT}, {{DistillationDISTLoss: {{weight: 2.0, {PAIR}}}}}]"),
}


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, argparse.Namespace]:
    """(this script's options, the ladder's options)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--losses", default=",".join(ARMS), help=f"arms to run, from {','.join(ARMS)}")
    p.add_argument("--lr", type=float, default=0.1, help="one learning rate for every arm")
    own, rest = p.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
    for arm in own.losses.split(","):
        if arm not in ARMS:
            p.error(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    rest = rest if any(a.startswith("--work") for a in rest) else rest + ["--work", "./output/loss_study"]
    if not any(a.startswith("--results-dir") for a in rest):  # the ladder's default is its own folder
        rest += ["--results-dir", common.results_dir(__file__)]
    return own, L.parse_args(rest)


def markdown(p: Dict[str, Any]) -> str:
    """One table: every run, then the mean per arm."""
    rows = ["| arm | loss | seed | epochs | images seen | wall | test top-1 |", "|" + "---|" * 7]
    rows += [f"| {r['arm']} | {r['loss']} | {r['seed']} | {r['epochs']} | {r['images_seen']:,} | "
             f"{r['wall_s'] / 60:.1f} min | {100 * r['top1']:.2f}% |" for r in p["runs"]]
    rows += ["", "| arm | loss | mean top-1 | seeds |", "|---|---|---|---|"]
    rows += [f"| {a} | {m['loss']} | {100 * m['mean_top1']:.2f}% | "
             + ", ".join(f"{100 * v:.2f}%" for v in m["top1"]) + " |" for a, m in p["by_arm"].items()]
    s = p["settings"]
    spread = max((max(m["top1"]) - min(m["top1"]) for m in p["by_arm"].values()), default=0.0)
    means = [m["mean_top1"] for m in p["by_arm"].values()]
    rows += ["", f"Teacher ({s['teacher_arch']}) top-1: {100 * p['teacher_top1']:.2f}%. Student {s['student']}, "
             f"{s['dataset']} L = the ladder's labeled split, {s['train_images']:,} images per epoch, test on "
             f"{s['val_images']:,} images after the last epoch. LR {s['lr']} for every arm (not tuned per loss). "
             f"Scale: `--scale {s['scale']}`, `--limit-train {s['limit_train']}` (the teacher saw the first "
             f"{s['limit_train']} of the full set once): a small budget. Seed-to-seed spread within one arm reaches "
             f"{100 * spread:.1f} points, the arms' means span {100 * (max(means) - min(means)):.1f}: with two seeds "
             f"this ranks nothing reliably; it shows every loss trains the student in SSLD's setting.", "", f"Wall time of every run above and the teacher's: {p['total_wall_s'] / 60:.0f} min.", ""]
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run the arms (finished runs are skipped) and write the results."""
    from ppssld.utils.logger import setup_logging

    own, args = parse_args(argv)
    setup_logging()
    lad = L.Ladder(args)
    os.makedirs(lad.work, exist_ok=True)
    setup_logging(os.path.join(lad.work, "loss_study.log"))
    tic = time.time()
    lad.prepare()
    teacher_top1 = lad.train_teacher()
    step = L.STEPS["js_L"]
    runs = []
    for arm in own.losses.split(","):
        name, loss = ARMS[arm]
        for seed in lad.seeds:
            yaml_path, ov = lad.arm("js", "student", own.lr)
            ov = [o for o in ov if not o.startswith("Loss.Train")] + [f"Loss.Train={loss}"]
            epochs = lad.plan.epochs(step)
            result = lad.train(f"3_{arm}_seed{seed}", yaml_path, ov, epochs, seed, lad.plan.run_s(step.key, epochs))
            runs.append({"arm": arm, "loss": name, "seed": seed, **{k: result[k] for k in
                                                                     ("epochs", "images_seen", "wall_s", "top1")}})
    by_arm: Dict[str, Any] = {}
    for r in runs:
        entry = by_arm.setdefault(r["arm"], {"loss": r["loss"], "top1": []})
        entry["top1"].append(r["top1"])
    for entry in by_arm.values():
        entry["mean_top1"] = round(sum(entry["top1"]) / len(entry["top1"]), 5)
    sizes = lad.plan.sizes()
    payload = {"teacher_top1": teacher_top1, "runs": runs, "by_arm": by_arm, "total_wall_s": round(sum(lad.walls.values()), 1),
               "this_invocation_s": round(time.time() - tic, 1),
               "settings": {"dataset": args.dataset, "student": args.student, "teacher_arch": args.teacher_arch,
                            "teacher": lad.teacher, "scale": args.scale, "limit_train": args.limit_train,
                            "limit_val": args.limit_val, "seeds": lad.seeds, "lr": own.lr,
                            "train_images": sizes["L"], "val_images": sizes["val"],
                            "losses": {a: ARMS[a][1] for a in by_arm}}}
    path = common.write_results("loss_study", payload, markdown(payload), os.path.abspath(args.results_dir))
    logger.info("[LossStudy] results: %s", path)
    return payload


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
