"""The classic SSLD ablation ladder (Fashion-MNIST): steps 0-6 at fixed budgets and a transfer check, resumable.

Every run goes through the library as a user would: ``load_config(<shipped quick-start YAML>, -o ...)``
then ``build_trainer(config).fit()``, each in its own folder under ``--work``. A finished run writes
``result.json`` and is skipped on re-run; an interrupted one resumes from its ``latest`` checkpoint.
Each run evaluates on the test set once, after its last epoch (no best-epoch picking on test).

Teacher: ``teacher_ResNet18_1ep.yaml``'s recipe (ResNet18, AdamW, 1 epoch on all 60,000 labels). Soft-label
cache (default; ``--no-cache``: the teacher runs per batch as before): for every (train list + unlabeled list,
seed) that distillation arms read (steps 2-6 and the KD/JS LR search), ONE cache is generated in-process
(``ppssld.cache.generate``: V = the most epochs any of its readers trains, so no view is reused; K =
``--cache-topk``, float16) as its own resumable unit, timed, and counted in the ladder's wall total; the arms
train with ``Global.soft_label_cache`` pointing at it (a config the cache rules refuse trains online, with the
reason in the results). ``--online-check`` also trains steps 3 and 5, both seeds, online (eval-mode teacher)
and reports "cached vs online". ``--converge`` trains steps 0 and 1 at epoch budgets E, 2E, 4E, ... (each a
full run with its own cosine schedule) until a doubling gains < ``--plateau`` points of mean test top-1 or the
next budget would pass ``--converge-cap-min`` minutes for that step (cost model corrected by the speed seen);
the chosen budget is the one with the best mean top-1 (test-set selection, as the question is "where does test
top-1 stop rising") and step 1's chosen runs are the reference of every delta. ``--only`` runs a subset
(plus what it needs: teacher, data, mining, caches, step 5 before 6).

    python -m benchmark.ladder --plan                 # print the budget table, run nothing (any options)
    python -m benchmark.ladder                        # the whole ladder from the caches: --plan 85 min
                                                      #   (--no-cache: 94 min)
    # (a) the cache's approximation measured, steps 3 and 5, two seeds each, cached and online: --plan 67 min
    #     (teacher 8.5 and mining 8.4 of it are reused by (b) when both use the same --work)
    python -m benchmark.ladder --scale 0.25 --only js_L,js_mined --online-check
    # (b) the full ladder, the committed run's settings, steps 0 and 1 trained until test top-1 stops rising:
    #     --plan 122 min worst case (--no-cache: 136 min; without --converge 97 min, --no-cache 111 min)
    python -m benchmark.ladder --scale 0.5 --tune --tune-epochs 6 --lr-grid 0.05,0.1,0.2 --converge
    python -m benchmark.ladder --no-cache ...         # the old behaviour: online teacher everywhere
    python -m benchmark.ladder --scale 0.02 --limit-train 600 --limit-val 300 --tune --online-check --converge \\
        --results-dir /tmp/smoke --work /tmp/smoke_work        # smoke run, ~2.5 min on the 2-core CPU

(from the repository root). --plan figures: the cost model of ``budget.py`` (IPS), which assumes a cached arm
trains at CE speed until a ladder run measures it; re-run ``--plan`` after changing options. Files: ``budget.py``
(plan, cost model), ``runs.py`` (data, configs, caches, runs), ``render.py`` (ladder.md, ladder.png). The converged
ladder (every compared arm trained to a plateau) is ``python -m benchmark.ladder converged``.
"""
import argparse
import hashlib
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional

from benchmark import common
from benchmark.ladder.budget import DATASETS, ONLINE_CHECK, STEPS, TUNE_ARMS, Plan, parse_only
from benchmark.ladder.render import markdown, plot, wall_by_part
from benchmark.ladder.runs import (CACHE_DTYPE, RESULTS, YAML, LadderRuns, command_line, floats, load_json, read_lines,
                                   short_hash)

logger = logging.getLogger("ppssld.benchmark.ladder")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring); bad combinations exit 2 with one message."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="./output/ladder", help="run folders, data, caches and checkpoints")
    p.add_argument("--results-dir", default=RESULTS, help="where ladder.{json,md,png} go")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion_mnist")
    p.add_argument("--student", default="MobileNetV3_small_x0_35", help="zoo backbone of the student")
    p.add_argument("--teacher", default=None, help="existing teacher .pdparams (skips training one)")
    p.add_argument("--teacher-arch", default="ResNet18")
    p.add_argument("--scale", type=float, default=0.5,
                   help="multiplies every epoch budget of the table but the teacher's (min 1 epoch)")
    p.add_argument("--seeds", default="1,2", help="seeds; steps 1, 5, 6 and X use two, the rest the first")
    p.add_argument("--k", type=int, default=1000, help="mined images per class")
    p.add_argument("--pool", type=int, default=20000, help="U images offered to the miner (0: all 55,000)")
    p.add_argument("--js-weight", type=float, default=4.0, help="JSDivLoss weight (true JS: ~4x smaller grads)")
    p.add_argument("--tune", action="store_true", help="pick each loss's LR on a held-out 20%% of L first")
    p.add_argument("--lr-grid", default="0.05,0.1,0.2")
    p.add_argument("--tune-epochs", type=int, default=10, help="epochs per tuning run (times --scale)")
    p.add_argument("--lr-mult-list", default="0.25,0.25,0.5,0.5,0.75")
    p.add_argument("--transfer-lr", type=float, default=0.05)
    p.add_argument("--no-cache", action="store_true", help="distil online (teacher run per batch), no cache")
    p.add_argument("--cache-topk", type=int, default=5, help="classes K kept per view in the caches (default 5)")
    p.add_argument("--online-check", action="store_true",
                   help="steps 3 and 5, both seeds, also trained online: the 'cached vs online' table")
    p.add_argument("--check-seeds", type=int, default=2,
                   help="--online-check: how many of --seeds steps 3 and 5 train, each both ways (default 2)")
    p.add_argument("--only", default=None, help="comma list of step keys to run (plus what they need)")
    p.add_argument("--converge", action="store_true", help="steps 0 and 1: double the epochs until top-1 stops "
                   "rising (see the docstring)")
    p.add_argument("--plateau", type=float, default=0.5, help="--converge: stop when a doubling gains less (points)")
    p.add_argument("--converge-cap-min", type=float, default=30.0, help="--converge: minutes per step at most")
    p.add_argument("--limit-train", type=int, default=None, help="smoke runs: keep the first N of each train list")
    p.add_argument("--limit-val", type=int, default=None, help="smoke runs: keep the first N of each val list")
    p.add_argument("--batch-size", type=int, default=None, help="train batch size (default: the YAMLs')")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the YAML's)")
    p.add_argument("--plan", action="store_true", help="print the budget table and exit")
    args = p.parse_args(argv)
    try:
        parse_only(args.only)
    except ValueError as exc:
        p.error(str(exc))
    if args.check_seeds < 2 or args.check_seeds > len(args.seeds.split(",")):
        p.error(f"--check-seeds must be between 2 and the number of --seeds ({args.seeds}), got {args.check_seeds}")
    if args.online_check and args.no_cache:
        p.error("--online-check compares training from the cache with online training: drop --no-cache")
    if not 1 <= args.cache_topk <= DATASETS[args.dataset]["classes"]:
        p.error(f"--cache-topk must be in [1, {DATASETS[args.dataset]['classes']}] (the class count), "
                f"got {args.cache_topk}")
    if args.plateau < 0 or args.converge_cap_min <= 0:
        p.error("--plateau must be >= 0 and --converge-cap-min > 0")
    return args


class Ladder(LadderRuns):
    """The ladder's steps, in order (see the module docstring)."""

    def run_step(self, key: str, seed: int, epochs: Optional[int] = None, online: bool = False,
                 pretrained: Optional[str] = None) -> Dict[str, Any]:
        """Train step ``key`` for ``seed`` (``online``: its --online-check twin); kept in the results."""
        step = STEPS[key]
        lr = self.lr["js"] / 10 if step.loss == "ft" else self.lr[step.loss]
        label = f"{step.step}_{key}_online_seed{seed}" if online else \
            self.plan.label(key, seed, epochs or self.plan.epochs(step))
        result = dict(self.run_spec(self.spec(label, key, seed, epochs or 0), lr, pretrained), step=int(step.step),
                      name=step.name)
        if online:
            self.twins.setdefault(key, {})[str(seed)] = result
        elif not self.plan.converging(key):
            self.results[label] = result
        return result

    def converge(self, key: str) -> None:
        """--converge for step ``key``: budgets E, 2E, 4E, ... until a doubling gains < --plateau points of mean
        top-1 or the next budget would pass --converge-cap-min (cost model x the speed seen in this step);
        the best mean top-1's runs become the step's results."""
        step, seeds = STEPS[key], self.plan.step_seeds(key)
        budgets: List[Dict[str, Any]] = []
        epochs, spent, spent_est, cap = self.plan.epochs(step), 0.0, 0.0, self.args.converge_cap_min * 60
        while True:
            runs = {seed: self.run_step(key, seed, epochs) for seed in seeds}
            mean = sum(r["top1"] for r in runs.values()) / len(runs)
            wall = sum(r["wall_s"] for r in runs.values())
            spent, spent_est = spent + wall, spent_est + self.plan.run_s(key, epochs) * len(seeds)
            budgets.append({"epochs": epochs, "top1": [runs[s]["top1"] for s in seeds], "mean": round(mean, 5),
                            "wall_s": round(wall, 1), "runs": runs})
            if len(budgets) > 1 and 100 * (mean - budgets[-2]["mean"]) < self.args.plateau:
                stop = (f"plateau: {budgets[-2]['epochs']} -> {epochs} epochs gained "
                        f"{100 * (mean - budgets[-2]['mean']):+.2f} < {self.args.plateau:g} points")
                plateaued = True
                break
            nxt = self.plan.run_s(key, 2 * epochs) * len(seeds) * (spent / spent_est if spent_est else 1.0)
            if spent + nxt > cap:
                rise = f"; still rising ({100 * (mean - budgets[-2]['mean']):+.2f} at the last doubling)" \
                    if len(budgets) > 1 else ""
                stop = (f"cap, not converged: {2 * epochs} epochs (~{nxt / 60:.1f} min) would pass "
                        f"--converge-cap-min {self.args.converge_cap_min:g} ({spent / 60:.1f} min used){rise}")
                plateaued = False
                break
            epochs *= 2
        best = max(budgets, key=lambda b: (b["mean"], -b["epochs"]))
        for seed, result in best["runs"].items():
            self.results[f"{step.step}_{key}_seed{seed}"] = result
        for b in budgets:
            b.pop("runs")
        self.converged[key] = {"budgets": budgets, "chosen": best["epochs"], "stop": stop,
                               "plateaued": plateaued, "protocol": (
            f"epoch budgets E, 2E, 4E, ... (each a full run with its own cosine schedule, resumable), stopped when a "
            f"doubling gains < {self.args.plateau:g} points of mean test top-1 over the seeds or the next budget would "
            f"pass {self.args.converge_cap_min:g} min for the step; chosen: the best mean top-1 (on the test set: the "
            f"question is where test top-1 stops rising)")}
        logger.info("[Ladder] %s stopped (%s); chosen %d epochs (mean top-1 %.2f%%)", key, stop, best["epochs"],
                    100 * best["mean"])

    def train_teacher(self) -> float:
        """Train the teacher (teacher_ResNet18_1ep.yaml's recipe) on all labels, or evaluate the given one;
        returns its test top-1."""
        if not self.args.teacher:
            spec = self.spec(f"T_teacher_seed{self.seeds[0]}")
            yaml_path, ov = self.arm("teacher", "full", None)
            result = self.train(spec.label, yaml_path, ov, spec.epochs, spec.seed, spec.est_s)
            self.teacher = result["best_model"]
            return result["top1"]
        self.teacher = os.path.abspath(self.args.teacher)
        marker = os.path.join(self.work, "teacher_eval", short_hash(self.teacher) + ".json")
        if not os.path.isfile(marker):
            from ppssld.utils.config import load_config
            from ppssld.engine.builder import build_eval_pieces, build_full_model, prepare_runtime
            from ppssld.engine.evaluator import evaluate
            from ppssld.utils.io import atomic_write_json

            yaml_path, ov = self.arm("teacher", "full", None)
            config = load_config(yaml_path, ov + [f"Global.pretrained_model={self.teacher}"])
            prepare_runtime(config)
            loader, metrics, _ = build_eval_pieces(config)
            atomic_write_json(marker, evaluate(build_full_model(config), loader, metrics))
        return float(load_json(marker)["top1"])

    def tune(self) -> None:
        """Pick the LR of each loss (CE, KD, JS) by held-out top-1 on 20% of L; fine-tune uses JS LR / 10.
        KD and JS read the tune split's cache (unless --no-cache)."""
        for arm in TUNE_ARMS:
            scores = {}
            for lr in floats(self.args.lr_grid):
                scores[lr] = self.run_spec(self.spec(f"tune_{arm}_lr{lr}"), lr)["top1"]
            self.lr[arm] = max(scores, key=lambda x: (scores[x], -abs(x - 0.1)))
            self.tune_report[arm] = {"held_out_top1": {str(k): v for k, v in scores.items()}, "chosen": self.lr[arm]}
        self.lr_source = (f"tuned: best held-out top-1 on 20% of L ({self.plan.tune_epochs()} epochs, trained on the "
                          f"other 80%)")

    def mine(self) -> Dict[str, Any]:
        """Top-k per class from the first --pool images of U, de-duplicated against the test set, once."""
        from ppssld.utils.config import load_config
        from ppssld.mining.mine import mine
        from ppssld.teacher.frozen import teacher_from_config
        from ppssld.utils.io import atomic_write_json

        d = self.data["student"]
        pool = self.limited(d["unlabeled"], self.args.pool)
        ident = hashlib.sha1(json.dumps([self.teacher, d, pool, self.args.k]).encode()).hexdigest()[:8]
        out = os.path.join(self.work, "runs", f"M_mine_k{self.args.k}_{ident}")
        marker, label = os.path.join(out, "result.json"), f"M_mine_seed{self.seeds[0]}"
        if not os.path.isfile(marker):
            tic = time.time()
            config = load_config(*self.arm("js", "student", 0.1))
            report = mine(teacher_from_config(config), config, pool, d["root"], d["val"], self.args.k, out,
                          batch_size=128)
            atomic_write_json(marker, {"selected": report["selected"], "scored": report["scored"],
                                       "removed_duplicates": report["dedup"]["removed"],
                                       "selected_list": os.path.join(out, "selected_list.txt"),
                                       "wall_s": round(time.time() - tic, 1)})
            self.progress(label, self.plan.mine_s(), time.time() - tic)
        else:
            logger.info("[Ladder] %s: finished earlier, skipped (%s)", label, marker)
            self.progress(label, 0.0, None)
        result = load_json(marker)
        self.walls[label] = float(result["wall_s"])
        self.mined = result["selected_list"]
        self.plan = Plan(self.args, mined=len(read_lines(self.mined)))  # step 5's epochs and cache sizes
        self.units = self.plan.units()
        return result

    def transfer(self, source: str, seed: int) -> Dict[str, Any]:
        """Fine-tune the student of run ``source`` on digits with lr_mult_list (``LadderRuns.transfer_from``)."""
        spec = self.spec(f"X_transfer_from_{source}")
        return self.transfer_from(self.results[source]["best_model"], source, spec.label, seed, spec.epochs,
                                  spec.est_s, DATASETS[self.args.dataset]["classes"])

    # ---- the ladder ------------------------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        """Every stage that runs, in order; returns the results payload."""
        tic = time.time()
        keys = self.plan.keys()
        check = self.args.online_check
        self.prepare()
        teacher_top1 = self.train_teacher()
        if self.args.tune:
            self.tune()
        for key in ("ce_full", "ce_L"):
            if key in keys and self.plan.converging(key):
                self.converge(key)
            elif key in keys:
                for seed in self.plan.step_seeds(key):
                    self.run_step(key, seed)
        for key in ("kd_L", "js_L", "js_long"):
            for seed in self.plan.step_seeds(key) if key in keys else []:
                self.run_step(key, seed)
                if check and key in ONLINE_CHECK:
                    self.run_step(key, seed, online=True)
        mining = self.mine() if "mine" in keys else None
        for seed in self.plan.step_seeds("js_mined") if "js_mined" in keys else []:
            self.run_step("js_mined", seed)
            if check:
                self.run_step("js_mined", seed, online=True)
        for seed in self.plan.step_seeds("finetune") if "finetune" in keys else []:
            self.run_step("finetune", seed, pretrained=self.results[f"5_js_mined_seed{seed}"]["best_model"])
        transfer = None
        if "transfer" in keys:
            s1 = self.seeds[0]
            transfer = {"dataset": "digits (scikit-learn, 8x8 upsampled to 32x32)",
                        "baseline_step1": self.transfer(f"1_ce_L_seed{s1}", s1),
                        "ssld_step6": self.transfer(f"6_finetune_seed{s1}", s1)}
        return self.payload(teacher_top1, mining, transfer, time.time() - tic)

    def online_check(self) -> Dict[str, Any]:
        """--online-check's pairs: per arm, per seed, the cached and the online run's top-1 and wall."""
        out = {}
        for key, twins in self.twins.items():
            step = STEPS[key]
            cached = {str(r["seed"]): {"top1": r["top1"], "wall_s": r["wall_s"], "teacher": r["teacher"]}
                      for label, r in self.results.items() if label.startswith(f"{step.step}_{key}_seed")}
            out[key] = {"cached": cached, "online": {s: {"top1": r["top1"], "wall_s": r["wall_s"]}
                                                     for s, r in twins.items()}}
        return out

    def payload(self, teacher_top1: float, mining: Optional[Dict[str, Any]], transfer: Optional[Dict[str, Any]],
                wall: float) -> Dict[str, Any]:
        """The results JSON (command, machine and date are added by ``common.write_results``)."""
        keys = ("name", "seed", "epochs", "images_seen", "wall_s", "top1", "lr", "loss", "resumed", "teacher")
        steps = [dict({"step": r["step"], "label": label}, **{k: r[k] for k in keys})
                 for label, r in self.results.items()]
        a = self.args
        settings = {"dataset": a.dataset, "student": a.student, "teacher": self.teacher, "teacher_arch": a.teacher_arch,
                    "teacher_recipe": YAML["teacher"], "scale": a.scale, "seeds": self.seeds,
                    "js_weight": a.js_weight, "k_per_class": a.k, "pool": self.plan.sizes()["U"],
                    "kd": "DistillationGTCELoss 1.0 + KLDivLoss 1.0 (T=4, T^2 included)", "lr": self.lr,
                    "lr_source": self.lr_source, "limit_train": a.limit_train, "limit_val": a.limit_val,
                    "soft_label_cache": None if a.no_cache else {
                        "topk": a.cache_topk, "dtype": CACHE_DTYPE, "rebuild": "spread (ppssld.cache.reader default)",
                        "views": "one per epoch of the longest reader: no view reused"},
                    "only": list(self.plan.keys()) if a.only else None, "online_check": a.online_check,
                    "converge": {"plateau_points": a.plateau, "cap_min": a.converge_cap_min} if a.converge else None,
                    "top1": "fraction, test set, after the last epoch"}
        return {"teacher_top1": teacher_top1, "steps": steps, "transfer": transfer, "mining": mining,
                "settings": settings, "tune": self.tune_report, "caches": self.caches, "cache_refused": self.refused,
                "converge": self.converged, "online_check": self.online_check(),
                "total_wall_s": round(sum(self.walls.values()), 1), "invocation_wall_s": round(wall, 1),
                "wall_s_by_run": self.walls, "wall_by_part": wall_by_part(self.walls), "budget": self.plan.table()}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run (or with --plan, only print the budget of) the ladder; write the results."""
    from ppssld.utils.logger import setup_logging

    args = parse_args(argv)
    setup_logging()
    ladder = Ladder(args)
    if args.plan:
        print(ladder.plan.table())
        return {}
    logger.info("[Ladder] budget (OMP_NUM_THREADS=%s):\n%s", os.environ.get("OMP_NUM_THREADS"), ladder.plan.table())
    os.makedirs(ladder.work, exist_ok=True)
    setup_logging(os.path.join(ladder.work, "ladder.log"))
    payload = dict(ladder.run(), command=command_line())
    common.RESULTS = os.path.abspath(args.results_dir)
    path = common.write_results("ladder", payload, markdown(payload))
    plot(payload, os.path.join(common.RESULTS, "ladder.png"))
    logger.info("[Ladder] results: %s (+ ladder.md, ladder.png) in %.1f min", path, payload["total_wall_s"] / 60)
    return payload

