"""The converged ladder: every compared arm trained to a measured plateau, LR and weight decay picked on held-out L.

    python -m benchmark.ladder converged --plan     # the plan and its cost (expected, worst case), runs nothing
    python -m benchmark.ladder converged            # the run: hours, resumable (re-run the same command)
    python -m benchmark.ladder converged --labeled 200 --pool 400 --k 10 --k-rungs 0,3,all --limit-train 600 \\
        --limit-val 200 --strong-epochs 2 --start ce_oracle=1,ce_L=2,js_mined=1,finetune=1 --max-doublings 1 \\
        --transfer-epochs 1 --seeds 1,2 --batch-size 32 --workers 0 \\
        --work /tmp/ladder_smoke --results-dir /tmp/ladder_smoke_results     # a smoke run (~6 min, docs/ladder.md)

Arms (``arms.py``): step 1 CE on L, step 5 SSLD JS on L + mined, step 6 its fine-tune on L, step 0 CE on L + the
mined images with their true labels (the oracle), and one rung per factor of the paper (teacher strength, loss,
mined amount; fine-tune on/off is step 6 vs 5). Protocol (tune, search, re-check, seeds): ``arms.py``; the plateau
rule: ``plateau.py``. Every SSLD arm reads a soft-label cache (one family per teacher, list and seed, grown to the
most epochs any reader trains by linking the views it already has) generated with the teacher inference engine
(``Arch.teacher_engine: auto``). Each run is a folder under ``--work`` with a ``result.json``: a re-run skips
finished runs and caches, resumes an interrupted run from its ``latest`` checkpoint, and replays the search's
decisions from the stored results, so the ladder can span sittings; ``--max-doublings`` can be raised on a
re-run and the searches continue where they stopped. Results: ``ladder.{json,md,png}`` in ``--results-dir``.
"""
import argparse
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

from benchmark import common
from benchmark.ladder import plateau
from benchmark.ladder.arms import Arm, Plan, parse_only, start_budgets
from benchmark.ladder.converged_render import markdown, plot
from benchmark.ladder.converged_runs import ConvergedRuns
from benchmark.ladder.runs import RESULTS, command_line, cpu_seconds, read_lines

logger = logging.getLogger("ppssld.benchmark.ladder")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (module docstring); a bad value exits 2 with one message naming the option."""
    p = argparse.ArgumentParser(prog="python -m benchmark.ladder converged", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="./output/ladder_converged", help="run folders, data, caches, checkpoints")
    p.add_argument("--results-dir", default=RESULTS, help="where ladder.{json,md,png} go")
    p.add_argument("--student", default="MobileNetV3_small_x0_35", help="zoo backbone of the student")
    p.add_argument("--teacher-arch", default="ResNet18", help="zoo backbone of both teachers")
    p.add_argument("--strong-epochs", type=int, default=4, help="epochs of the strong teacher (the weak one: 1)")
    p.add_argument("--labeled", type=int, default=2000, help="L: class-balanced labeled images (default 2,000)")
    p.add_argument("--pool", type=int, default=20000, help="U images offered to the miner (the rest of the 60,000 "
                   "after L, first N)")
    p.add_argument("--k", default="1000", help="step 5's mined images per class")
    p.add_argument("--k-rungs", default="0,300,all", help="the mined-amount rungs (k per class; 0: L only; all: "
                   "every pool image the de-duplication keeps)")
    p.add_argument("--seeds", default="1,2,3", help="seeds of steps 1, 5, 6 (the search and the rungs use the first)")
    p.add_argument("--plateau", type=float, default=0.5, help="a doubling that gains fewer points is the plateau")
    p.add_argument("--max-doublings", type=int, default=2, help="doublings past an arm's start budget at most")
    p.add_argument("--cap-epochs", type=int, default=256, help="no budget above this many epochs")
    p.add_argument("--start", default="", help="start budgets, e.g. ce_L=32,js_mined=8 (defaults: arms.START)")
    p.add_argument("--lr-grid", default="0.05,0.1,0.2", help="LRs of the held-out search")
    p.add_argument("--wd-grid", default="0.00005,0.0005", help="weight decays: the LR search runs at the first, "
                   "the others are tried at the best LR")
    p.add_argument("--ft-lr-fractions", default="0.05,0.1,0.2", help="fine-tune LRs as fractions of step 5's LR")
    p.add_argument("--tune-frac", type=float, default=0.5, help="tuning runs: this fraction of the start budget")
    p.add_argument("--js-weight", type=float, default=4.0, help="JSDivLoss weight (true JS: ~4x smaller grads)")
    p.add_argument("--cache-topk", type=int, default=5, help="classes kept per view in the soft-label caches")
    p.add_argument("--transfer-epochs", type=int, default=15, help="epochs of each digits transfer run")
    p.add_argument("--transfer-lr", type=float, default=0.05)
    p.add_argument("--lr-mult-list", default="0.25,0.25,0.5,0.5,0.75", help="the transfer's per-stage LR factors")
    p.add_argument("--only", default=None, help="comma list of arms (plus what they need), e.g. ce_L,js_mined")
    p.add_argument("--limit-train", type=int, default=None, help="smoke runs: keep the first N of each train list")
    p.add_argument("--limit-val", type=int, default=None, help="smoke runs: keep the first N of the test list")
    p.add_argument("--batch-size", type=int, default=None, help="train batch size (default: the YAMLs' 128)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the YAMLs')")
    p.add_argument("--plan", action="store_true", help="print the plan and its cost, run nothing")
    args = p.parse_args(argv)
    try:
        parse_only(args.only)
        start_budgets(args)
        Plan(args).grid("lr"), Plan(args).grid("wd"), Plan(args).grid("ft")
    except ValueError as exc:
        p.error(str(exc))
    for name, value, low in (("--labeled", args.labeled, 10), ("--strong-epochs", args.strong_epochs, 1),
                             ("--max-doublings", args.max_doublings, 1), ("--cap-epochs", args.cap_epochs, 1),
                             ("--transfer-epochs", args.transfer_epochs, 1), ("--cache-topk", args.cache_topk, 1)):
        if value < low:
            p.error(f"{name} must be >= {low}, got {value}")
    if args.cache_topk > 10:
        p.error(f"--cache-topk must be <= 10 (Fashion-MNIST's class count), got {args.cache_topk}")
    for name in ("k", "k_rungs"):
        bad = [v for v in str(getattr(args, name)).split(",") if v.strip() and not (v.strip() == "all" or
                                                                                   v.strip().isdigit())]
        if bad or (name == "k" and str(args.k) in ("0", "")):
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: each value is a count per class or 'all'"
                    f"{' (step 5 needs mined images: not 0)' if name == 'k' else ''}")
    if len(args.seeds.split(",")) < 1 or not 0 < args.tune_frac <= 1 or args.plateau < 0:
        p.error("--seeds needs one seed or more, --tune-frac must be in (0, 1], --plateau >= 0")
    return args


Setting = Dict[str, float]


class ConvergedLadder(ConvergedRuns):
    """The protocol of ``arms.py`` over the pieces of ``converged_runs.py``."""

    def ladder(self) -> Dict[str, Any]:
        """Every arm in order (steps 1, 5, 6, 0, the rungs), then the transfer; returns the results payload."""
        tic, cpu = time.time(), cpu_seconds()
        self.prepare()
        self.train_teachers()
        self.results: Dict[str, Dict[str, Any]] = {}
        for arm in self.plan.arms:
            self.results[arm.key] = self.rung(arm) if arm.rung else self.main_arm(arm)
        transfer = self.transfer_all() if not self.args.only or "transfer" in parse_only(self.args.only) else None
        return self.payload(transfer, time.time() - tic, cpu_seconds() - cpu)

    # ---- the protocol ------------------------------------------------------------------------------------------
    def start_of(self, arm: Arm, seed: int) -> Optional[str]:
        """Start weights of ``arm`` for ``seed``: step 5's chosen model of that seed for the fine-tune, else none."""
        return self.results["js_mined"]["models"][str(seed)] if arm.loss == "ft" else None

    def tune(self, arm: Arm, start: int) -> Dict[str, Any]:
        """The held-out search of ``arm`` (``arms.py``): every setting's top-1 on the held-out 20% of L, the chosen
        setting and the runner-up (ties: the earlier in grid order)."""
        js = self.results.get("js_mined", {}).get("setting")
        epochs, pre = self.plan.tune_epochs(start), None
        if arm.tune == "ft":
            pre = self.results["js_mined"]["tune_model"]
            grid = [{"lr": round(js["lr"] * f, 8), "wd": js["wd"]} for f in self.plan.grid("ft")]
        elif arm.tune == "lr":
            grid = [{"lr": lr, "wd": js["wd"]} for lr in self.plan.grid("lr")]
        else:
            grid = [{"lr": lr, "wd": self.plan.grid("wd")[0]} for lr in self.plan.grid("lr")]
        runs = [dict(s, held_out=self.run(arm, "tune", self.seeds[0], epochs, s, True, pre)["top1"]) for s in grid]
        if arm.tune == "lr_wd":
            best = max(runs, key=lambda r: r["held_out"])
            runs += [dict(lr=best["lr"], wd=wd, held_out=self.run(arm, "tune", self.seeds[0], epochs,
                                                                  {"lr": best["lr"], "wd": wd}, True)["top1"])
                     for wd in self.plan.grid("wd")[1:]]
        ranked = sorted(runs, key=lambda r: -r["held_out"])
        pick = lambda r: {"lr": r["lr"], "wd": r["wd"]}  # noqa: E731
        return {"epochs": epochs, "runs": runs, "chosen": pick(ranked[0]),
                "runner_up": pick(ranked[1]) if len(ranked) > 1 else None}

    def recheck(self, arm: Arm, tune: Dict[str, Any], budget: int) -> Dict[str, Any]:
        """The chosen setting and the runner-up at ``budget`` on the tuning split; switched when the runner-up
        scores higher on the held-out part."""
        pre = self.results["js_mined"]["tune_model"] if arm.tune == "ft" else None
        out: Dict[str, Any] = {"epochs": budget, "switched": False}
        for which in ("chosen", "runner_up"):
            if tune[which] is not None:
                r = self.run(arm, "re-check", self.seeds[0], budget, tune[which], True, pre)
                out[which] = dict(tune[which], held_out=r["top1"], model=r["best_model"])
        if "runner_up" in out:
            out["switched"] = out["runner_up"]["held_out"] > out["chosen"]["held_out"]
        return out

    def search(self, arm: Arm, setting: Setting, start: int, cap: int, kind: str = "search") -> Dict[str, Any]:
        """The doubling search of ``arm`` on the first seed under ``setting``, from ``start`` up to ``cap``."""
        seed = self.seeds[0]
        train: Callable[[int], float] = lambda e: self.run(arm, kind, seed, e, setting,  # noqa: E731
                                                           pretrained=self.start_of(arm, seed))["top1"]
        return plateau.search(train, start, cap, self.args.plateau)

    def main_arm(self, arm: Arm) -> Dict[str, Any]:
        """Tune, search, re-check (if it switched: search again once, under the new setting, from half the chosen
        budget), then every seed at the chosen budget."""
        start = self.plan.arm_start(arm, 0)
        cap = self.plan.cap(start)
        tune = self.tune(arm, start)
        setting = tune["chosen"]
        found = self.search(arm, setting, start, cap)
        check = self.recheck(arm, tune, found["chosen"])
        if check["switched"]:  # the plateau again under the new setting: from half the chosen budget, same cap
            setting = tune["runner_up"]
            again = self.search(arm, setting, max(start, found["chosen"] // 2), cap, "search (re-checked setting)")
            found = dict(again, first=found)
        final = check["runner_up" if check["switched"] else "chosen"]
        return dict(self.seed_runs(arm, setting, found), tune=tune, recheck=check, tune_model=final["model"])

    def rung(self, arm: Arm) -> Dict[str, Any]:
        """One factor: seed 1, step 5's setting (a loss rung: its own LR search), the search from half step 5's
        chosen budget in images seen."""
        if arm.k:
            self.mine_list(arm.teacher, arm.k)
        start = self.plan.arm_start(arm, self.results["js_mined"]["chosen"])
        tune = self.tune(arm, start) if arm.tune else None
        setting = tune["chosen"] if tune else self.results["js_mined"]["setting"]
        return dict(self.seed_runs(arm, setting, self.search(arm, setting, start, self.plan.cap(start))), tune=tune)

    def seed_runs(self, arm: Arm, setting: Setting, found: Dict[str, Any]) -> Dict[str, Any]:
        """Every seed of ``arm`` at the chosen budget (the first seed's run is the search's)."""
        seeds = {}
        for seed in self.seeds[:arm.seeds]:
            r = self.run(arm, "seed" if seed != self.seeds[0] else "chosen", seed, found["chosen"], setting,
                         pretrained=self.start_of(arm, seed))
            seeds[str(seed)] = {k: r.get(k) for k in ("top1", "wall_s", "cpu_s", "images_seen", "label", "best_model")}
        return {"key": arm.key, "step": arm.step, "name": arm.name, "loss": arm.loss, "teacher": arm.teacher,
                "k": arm.k, "images_per_epoch": self.plan.images(arm), "setting": setting, "search": found,
                "chosen": found["chosen"], "plateaued": found["plateaued"],
                "cap_reason": None if found["plateaued"] else found["stop"],
                "seeds": {s: {k: v for k, v in r.items() if k != "best_model"} for s, r in seeds.items()},
                "models": {s: r["best_model"] for s, r in seeds.items()},
                "stats": plateau.stats([r["top1"] for r in seeds.values()])}

    def transfer_all(self) -> Dict[str, Any]:
        """The digits transfer of steps 1 and 6 at their chosen budgets, every seed."""
        out: Dict[str, Any] = {"dataset": "digits (scikit-learn, 8x8 upsampled to 32x32)",
                               "epochs": self.args.transfer_epochs, "lr": self.args.transfer_lr}
        for key in ("ce_L", "finetune"):
            runs = {}
            for seed, model in self.results[key]["models"].items():
                est = self.plan.run_s(len(read_lines(self.data["transfer"]["train"])), self.args.transfer_epochs,
                                      len(read_lines(self.data["transfer"]["val"])))
                runs[seed] = self.transfer_from(model, f"{key}_seed{seed}", f"X_transfer_{key}_seed{seed}",
                                                int(seed), self.args.transfer_epochs, est, 10)
            out[key] = {"runs": runs, "stats": plateau.stats([r["top1"] for r in runs.values()])}
        return out

    # ---- results -----------------------------------------------------------------------------------------------
    def payload(self, transfer: Optional[Dict[str, Any]], wall: float, cpu: float) -> Dict[str, Any]:
        """The results JSON (machine and date are added by ``common.write_results``)."""
        arms = {k: {n: v for n, v in a.items() if n not in ("models", "tune_model")} for k, a in self.results.items()}
        ref = arms.get("ce_L")
        verdicts = {k: plateau.verdict(dict(arms[k]["stats"], plateaued=arms[k]["plateaued"]),
                                       dict(ref["stats"], plateaued=ref["plateaued"]))
                    for k in ("js_mined", "finetune", "ce_oracle") if ref and k in arms}
        a = self.args
        settings = {k: getattr(a, k) for k in ("student", "teacher_arch", "strong_epochs", "labeled", "pool", "k",
                                               "k_rungs", "seeds", "plateau", "max_doublings", "cap_epochs",
                                               "lr_grid", "wd_grid", "ft_lr_fractions", "tune_frac", "js_weight",
                                               "cache_topk", "transfer_epochs", "transfer_lr", "lr_mult_list",
                                               "only", "limit_train", "limit_val", "batch_size")}
        settings.update(start=self.plan.start, top1="fraction, test set (10,000 images), after the last epoch",
                        held_out=f"{len(self.lines_of('tune_val'))} images of L (every 5th of each class)")
        return {"command": command_line(), "settings": settings, "teachers": self.teacher_report,
                "mining": self.mining, "arms": arms, "verdicts": verdicts, "transfer": transfer,
                "caches": self.caches, "cache_refused": self.refused, "runs": self.log,
                "total_wall_s": round(sum(self.walls.values()), 1), "total_cpu_s": round(sum(self.cpus.values()), 1),
                "invocation_wall_s": round(wall, 1), "invocation_cpu_s": round(cpu, 1),
                "wall_s_by_unit": self.walls, "cpu_s_by_unit": self.cpus, "plan": self.plan.table()}

    def lines_of(self, key: str) -> List[str]:
        """The rows of the student data's list ``key``."""
        return read_lines(self.data["student"][key])


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Print the plan; unless --plan, run the ladder and write ladder.{json,md,png}."""
    from ppssld.utils.logger import setup_logging

    args = parse_args(argv)
    setup_logging()
    ladder = ConvergedLadder(args)
    print(ladder.plan.table(), flush=True)
    if args.plan:
        return {}
    os.makedirs(ladder.work, exist_ok=True)
    setup_logging(os.path.join(ladder.work, "ladder.log"))
    logger.info("[Ladder] converged ladder (OMP_NUM_THREADS=%s), plan:\n%s", os.environ.get("OMP_NUM_THREADS"),
                ladder.plan.table())
    payload = ladder.ladder()
    folder = os.path.abspath(args.results_dir)
    path = common.write_results("ladder", payload, markdown(payload), folder)
    plot(payload, os.path.join(folder, "ladder.png"))
    logger.info("[Ladder] results: %s (+ ladder.md, ladder.png); runs %.1f min wall, %.1f min CPU", path,
                payload["total_wall_s"] / 60, payload["total_cpu_s"] / 60)
    return payload
