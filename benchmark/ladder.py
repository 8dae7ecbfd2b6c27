"""The SSLD ablation ladder in miniature (Fashion-MNIST): steps 0-6 and a transfer check, resumable.

Every run goes through the library as a user would: ``load_config(<shipped quick-start YAML>, -o ...)``
then ``build_trainer(config).fit()``, each in its own folder under ``--work``. A finished run writes
``result.json`` and is skipped on re-run; an interrupted one resumes from its ``latest`` checkpoint.
Each run evaluates on the test set once, after its last epoch (no best-epoch picking on test).

    python benchmark/ladder.py --plan                 # print the budget table, run nothing
    python benchmark/ladder.py                        # the whole ladder, ~2 h on the 2-core CPU
    python benchmark/ladder.py --tune                 # first pick each loss's LR on a held-out part of L
    python benchmark/ladder.py --scale 0.5 --tune --tune-epochs 6 --lr-grid 0.05,0.1,0.2   # the committed results
    python benchmark/ladder.py --scale 0.02 --limit-train 1000 --limit-val 500 --results-dir /tmp/smoke
"""
import argparse
import datetime
import hashlib
import json
import logging
import os
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import common

# ---- Budget ----------------------------------------------------------------------------------------------------
# Cost model measured by the committed ladder run on this 2-core CPU (2026-11-25, OMP_NUM_THREADS=2,
# benchmark/results/ladder.json): training images/s including start-up, and seconds per 10,000 evaluated images.
# ResNet18 ran at ~61 img/s that day, ~40% of the calibration's 160 (shared/CALIBRATION.md); the students at ~80%.
# Mining: teacher scoring, then ~20 ms per pool image to de-duplicate it against the test set whatever its size
# (single-threaded): so the pool is capped (--pool) and L is not de-duplicated against.
IPS = {"ce": 190.0, "distill": 93.0, "teacher": 61.0, "mine": 190.0}
DEDUP_S = 0.020
EVAL_S = {"ce": 15.0, "distill": 15.0, "teacher": 45.0}
PREPARE_S = 30.0  # both copies of the 70,000 Fashion-MNIST PNGs (measured: 22 s with OMP_NUM_THREADS=1)


@dataclass(frozen=True)
class Step:
    """One rung: ``data`` is full (all labels), L (labeled), L+mined, U (the pool) or transfer."""
    step: str
    key: str
    name: str
    data: str
    epochs: int
    cost: str
    seeds: int


# Epochs at --scale 1; the default --scale 0.5 halves them. `--plan` prints the estimated minutes for any options
# (runs x epochs x images / img/s + one eval): ~119 min with data preparation at the default, + ~17 min with
# --tune (the committed run took 129 min in all).
BUDGET: List[Step] = [  # step, key, name, data, epochs, cost model, runs (seeds)
    Step("T", "teacher", "teacher ResNet18, CE, all labels", "full", 3, "teacher", 1),
    Step("0", "ce_full", "student CE, all labels (plain supervised)", "full", 2, "ce", 1),
    Step("1", "ce_L", "student CE on L", "L", 15, "ce", 2),
    Step("2", "kd_L", "classic KD: CE + KL(T=4) on L", "L", 15, "distill", 1),
    Step("3", "js_L", "SSLD JS on L", "L", 15, "distill", 1),
    Step("4", "js_long", "SSLD JS on L, 2x longer", "L", 30, "distill", 1),
    Step("M", "mine", "mine top-k per class from 20k of U", "U", 0, "mine", 1),
    Step("5", "js_mined", "SSLD JS on L + mined U", "L+mined", 0, "distill", 2),  # epochs: as many images as step 4
    Step("6", "finetune", "+ fine-tune on L (LR/10)", "L", 3, "distill", 2),
    Step("X", "transfer", "transfer to digits, lr_mult_list", "transfer", 15, "ce", 2),
]
STEPS = {s.key: s for s in BUDGET}
TUNE_ARMS = ("ce", "kd", "js")
DATASETS = {"fashion_mnist": {"full": 60000, "L": 5000, "val": 10000, "classes": 10},
            "digits": {"full": 1433, "L": 300, "val": 364, "classes": 10}}
DIGITS = DATASETS["digits"]  # the transfer set
QS = os.path.join(common.ROOT, "ppcls_configs", "quick_start", "fashion_mnist")
YAML = {"teacher": "teacher_ResNet18.yaml", "ce": "student_MV3_small_x0_35_ce.yaml",
        "kd": "ssld_R18_MV3_small_x0_35.yaml", "js": "ssld_R18_MV3_small_x0_35.yaml",
        "ft": "finetune_R18_MV3_small_x0_35.yaml"}
KD_LOSS = ("Loss.Train=[{DistillationGTCELoss: {weight: 1.0, model_names: [Student]}}, "
           "{KLDivLoss: {weight: 1.0, temperature: 4.0, model_name_pairs: [[Student, Teacher]]}}]")

logger = logging.getLogger("ppssld.benchmark.ladder")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="./output/ladder", help="run folders, data and checkpoints")
    p.add_argument("--results-dir", default=common.RESULTS, help="where ladder.{json,md,png} go")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion_mnist")
    p.add_argument("--student", default="MobileNetV3_small_x0_35", help="zoo backbone of the student")
    p.add_argument("--teacher", default=None, help="existing teacher .pdparams (skips training one)")
    p.add_argument("--teacher-arch", default="ResNet18")
    p.add_argument("--scale", type=float, default=0.5,
                   help="multiplies every epoch budget of the table (min 1 epoch); 0.5 fits ~2 h on 2 cores")
    p.add_argument("--seeds", default="1,2", help="seeds; steps 1, 5, 6 and X use two, the rest the first")
    p.add_argument("--k", type=int, default=1000, help="mined images per class")
    p.add_argument("--pool", type=int, default=20000, help="U images offered to the miner (0: all 55,000)")
    p.add_argument("--js-weight", type=float, default=4.0, help="JSDivLoss weight (true JS: ~4x smaller grads)")
    p.add_argument("--tune", action="store_true", help="pick each loss's LR on a held-out 20%% of L first")
    p.add_argument("--lr-grid", default="0.05,0.1,0.2")
    p.add_argument("--tune-epochs", type=int, default=10, help="epochs per tuning run (times --scale)")
    p.add_argument("--lr-mult-list", default="0.25,0.25,0.5,0.5,0.75")
    p.add_argument("--transfer-lr", type=float, default=0.05)
    p.add_argument("--limit-train", type=int, default=None, help="smoke runs: keep the first N of each train list")
    p.add_argument("--limit-val", type=int, default=None, help="smoke runs: keep the first N of each val list")
    p.add_argument("--batch-size", type=int, default=None, help="train batch size (default: the YAML's 128)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the YAML's)")
    p.add_argument("--plan", action="store_true", help="print the budget table and exit")
    return p.parse_args(argv)


def floats(text: str) -> List[float]:
    """``"0.1,0.2"`` -> ``[0.1, 0.2]``."""
    return [float(x) for x in text.split(",") if x.strip()]


def read_lines(path: str) -> List[str]:
    """The non-empty lines of a text file."""
    with open(path, "r", encoding="utf-8") as handle:
        return [line for line in handle if line.strip()]


def write_lines(path: str, rows: List[str]) -> str:
    """Write ``rows`` (newline-terminated) to ``path``; returns ``path``."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(rows)
    return path


def load_json(path: str) -> Dict[str, Any]:
    """A JSON file as a dict."""
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


class Ladder:
    """Runs the ladder; every stage is skipped when its ``result.json`` exists."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = os.path.abspath(args.work)
        self.seeds = [int(s) for s in args.seeds.split(",")]
        self.lr: Dict[str, float] = {"ce": 0.1, "kd": 0.1, "js": 0.1}
        self.lr_source = "YAML default (--tune not used)"
        self.data: Dict[str, Dict[str, str]] = {}
        self.teacher, self.mined = "", ""
        self.results: Dict[str, Dict[str, Any]] = {}
        self.tune_report: Dict[str, Any] = {}
        self.done_est = self.done_wall = 0.0
        self.walls: Dict[str, float] = {}  # label -> wall seconds of every run, this invocation's or an earlier one's
        self.units = self.plan()

    # ---- budget ----------------------------------------------------------------------------------------------
    def epochs(self, step: Step) -> int:
        """Epochs of ``step`` after --scale (step 5 sees as many images as step 4)."""
        if step.key == "js_mined":
            n = self.sizes()
            return max(1, round(self.epochs(STEPS["js_long"]) * n["L"] / n["L+mined"]))
        return max(1, round(step.epochs * self.args.scale))

    def sizes(self) -> Dict[str, int]:
        """Images per data kind, after --limit-train / --limit-val."""
        ds, lim = DATASETS[self.args.dataset], self.args.limit_train or 10 ** 9
        full, lab = min(ds["full"], lim), min(ds["L"], lim)
        pool = min(ds["full"] - ds["L"], lim, self.args.pool or 10 ** 9)
        mined = min(self.args.k * ds["classes"], pool)
        if self.mined:
            with open(self.mined, "r", encoding="utf-8") as handle:
                mined = sum(1 for line in handle if line.strip())
        return {"full": full, "L": lab, "U": pool, "L+mined": lab + mined, "transfer": min(DIGITS["full"], lim),
                "val": min(ds["val"], self.args.limit_val or 10 ** 9)}

    def estimate_s(self, step: Step) -> float:
        """Seconds one run of ``step`` should take by the cost model."""
        n = self.sizes()
        if step.key == "mine":
            return n["U"] / IPS["mine"] + n["U"] * DEDUP_S
        val = min(DIGITS["val"], n["val"]) if step.data == "transfer" else n["val"]
        return self.epochs(step) * n[step.data] / IPS[step.cost] + EVAL_S[step.cost] * val / 1e4 + 5

    def plan(self) -> List[Tuple[str, float]]:
        """(unit label, estimated seconds) for every run, in order."""
        units = [("prepare", PREPARE_S * DATASETS[self.args.dataset]["full"] / 6e4)]
        for step in BUDGET:
            if step.key == "teacher" and self.args.teacher:
                continue
            labels = [f"{step.step}_{step.key}_seed{s}" for s in self.seeds[:step.seeds]]
            if step.key == "transfer":
                labels = [f"X_transfer_from_{src}_seed{self.seeds[0]}" for src in ("1_ce_L", "6_finetune")]
            units += [(label, self.estimate_s(step)) for label in labels]
        if self.args.tune:
            tune_s = sum(self.args.tune_epochs * self.args.scale * self.sizes()["L"] * 0.8 / IPS[c] + 10
                         for c in ("ce", "distill", "distill"))
            units.insert(1 + (not self.args.teacher), ("tune", tune_s * len(floats(self.args.lr_grid))))
        return units

    def budget_table(self) -> str:
        """The budget per step as a markdown table with the estimated total."""
        rows = ["| step | key | name | data | epochs | runs | est. min |", "|---|---|---|---|---|---|---|"]
        for step in BUDGET:
            runs = 0 if step.key == "teacher" and self.args.teacher else min(step.seeds, len(self.seeds))
            ep = "-" if step.key == "mine" else self.epochs(step)
            rows.append(f"| {step.step} | {step.key} | {step.name} | {step.data} | {ep} | {runs} | "
                        f"{runs * self.estimate_s(step) / 60:.1f} |")
        total = sum(s for _, s in self.units) / 60
        return "\n".join(rows) + f"\n\nEstimated total (data preparation{' and tuning' if self.args.tune else ''}" \
                                 f" included): {total:.0f} min"

    def progress(self, label: str, est: float, wall: Optional[float]) -> None:
        """Log the overall ETA: the remaining budget, corrected by the speed seen so far."""
        labels = [u for u, _ in self.units]
        if label not in labels:
            return
        idx = labels.index(label)
        if wall is not None:
            self.done_est, self.done_wall = self.done_est + est, self.done_wall + wall
        ratio = self.done_wall / self.done_est if self.done_est > 0 else 1.0
        left = sum(s for _, s in self.units[idx + 1:]) * ratio
        eta = datetime.datetime.now() + datetime.timedelta(seconds=left)
        logger.info("[Ladder] %d/%d done (%s); ~%.0f min left (budget x%.2f), ETA %s", idx + 1, len(labels), label,
                    left / 60, ratio, eta.strftime("%H:%M"))

    # ---- data ------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Labeled/unlabeled split, a fully labeled copy and the digits transfer set (each made once)."""
        from ppssld.data.prepare import prepare_dataset

        ds, tic = self.args.dataset, time.time()
        n = DATASETS[ds]
        specs = {"student": (ds, n["L"], n["full"] - n["L"]), "full": (ds, None, None),
                 "transfer": ("digits", None, None)}
        for which, (name, labeled, unlabeled) in specs.items():
            out = os.path.join(self.work, "data", which)
            if not os.path.isfile(os.path.join(out, "prepare_summary.json")):
                prepare_dataset(name, out, labeled=labeled, unlabeled=unlabeled, seed=0)
            self.data[which] = {"root": os.path.join(out, "images"), "labels": os.path.join(out, "label_list.txt"),
                                "train": self.limited(os.path.join(out, "train_list.txt"), self.args.limit_train),
                                "val": self.limited(os.path.join(out, "val_list.txt"), self.args.limit_val),
                                "unlabeled": self.limited(os.path.join(out, "unlabeled_list.txt"),
                                                          self.args.limit_train)}
        self.progress("prepare", self.units[0][1], time.time() - tic)

    @staticmethod
    def limited(path: str, limit: Optional[int]) -> str:
        """``path``, or a copy holding its first ``limit`` rows."""
        if not limit or not os.path.isfile(path):
            return path
        return write_lines(f"{path[:-4]}.first{limit}.txt", read_lines(path)[:limit])

    def tune_split(self) -> Tuple[str, str]:
        """L split into 80% train / 20% held-out (every 5th image of each class), as two lists."""
        seen: Dict[str, int] = {}
        parts: Tuple[List[str], List[str]] = ([], [])
        for row in read_lines(self.data["student"]["train"]):
            seen[row.split()[-1]] = seen.get(row.split()[-1], 0) + 1
            parts[seen[row.split()[-1]] % 5 == 0].append(row)
        return (write_lines(os.path.join(self.work, "data", "tune_train.txt"), parts[0]),
                write_lines(os.path.join(self.work, "data", "tune_val.txt"), parts[1]))

    # ---- runs ------------------------------------------------------------------------------------------------
    def arm(self, loss: str, which: str, lr: float, train: Optional[str] = None, val: Optional[str] = None,
            unlabeled: Optional[str] = None, pretrained: Optional[str] = None) -> Tuple[str, List[str]]:
        """(YAML, overrides) for a loss (ce, kd, js, ft) trained on data set ``which``."""
        d = self.data[which]
        ov = [f"DataLoader.Train.dataset.image_root={d['root']}", f"DataLoader.Eval.dataset.image_root={d['root']}",
              f"DataLoader.Train.dataset.cls_label_path={train or d['train']}",
              f"DataLoader.Eval.dataset.cls_label_path={val or d['val']}", f"Global.class_names={d['labels']}",
              f"Optimizer.lr.learning_rate={lr}"]
        if self.args.batch_size:
            ov.append(f"DataLoader.Train.sampler.batch_size={self.args.batch_size}")
        if self.args.workers is not None:
            ov += [f"DataLoader.{m}.loader.num_workers={self.args.workers}" for m in ("Train", "Eval")]
        if loss == "ce":
            return os.path.join(QS, YAML["ce"]), ov + [f"Arch.name={self.args.student}"]
        ov += [f"Arch.models.Student.name={self.args.student}", f"Arch.models.Teacher.name={self.args.teacher_arch}",
               f"Arch.models.Teacher.pretrained={self.teacher}"]
        if loss != "ft":
            ov.append(f"DataLoader.Train.dataset.unlabeled_label_path={unlabeled or ''}")
        if pretrained:
            ov.append(f"Global.pretrained_model={pretrained}")
        ov.append(KD_LOSS if loss == "kd" else f"Loss.Train.JSDivLoss.weight={self.args.js_weight}")
        return os.path.join(QS, YAML[loss]), ov

    def train(self, label: str, yaml_path: str, overrides: List[str], epochs: int, seed: int,
              est: float) -> Dict[str, Any]:
        """One training run in its own folder (named by label and a hash of its settings); skipped when done."""
        from ppssld.config import load_config
        from ppssld.engine.builder import build_trainer, save_dir
        from ppssld.utils.io import atomic_write_json

        overrides = overrides + [f"Global.seed={seed}", f"Global.epochs={epochs}", f"Global.eval_interval={epochs}"]
        ident = hashlib.sha1(json.dumps([os.path.basename(yaml_path), overrides]).encode()).hexdigest()[:8]
        out = os.path.join(self.work, "runs", f"{label}_{ident}")
        marker = os.path.join(out, "result.json")
        if os.path.isfile(marker):
            logger.info("[Ladder] %s: finished earlier, skipped (%s)", label, marker)
            self.progress(label, est, None)
            result = load_json(marker)
            self.walls[label] = float(result["wall_s"])
            return result
        config = load_config(yaml_path, overrides + [f"Global.output_dir={out}"])
        latest = os.path.join(save_dir(config), "latest.pdparams")
        if os.path.isfile(latest):
            logger.info("[Ladder] %s: resuming the interrupted run from %s", label, latest)
            config["Global"]["checkpoints"] = latest
        logger.info("[Ladder] %s: starting (%d epochs, est. %.1f min) in %s", label, epochs, est / 60, out)
        resumed = bool(config["Global"].get("checkpoints"))
        tic = time.time()
        trainer = build_trainer(config)
        fit = trainer.fit()
        batch = int(config["DataLoader"]["Train"]["sampler"]["batch_size"])
        result = {"label": label, "seed": seed, "epochs": epochs, "top1": round(float(fit["best_metric"]), 5),
                  "images_seen": len(trainer.train_loader) * batch * epochs, "wall_s": round(time.time() - tic, 1),
                  "resumed": resumed, "best_model": os.path.join(save_dir(config), "best_model"),
                  "config": os.path.basename(yaml_path), "overrides": overrides}
        atomic_write_json(marker, result)
        self.progress(label, est, result["wall_s"])
        self.walls[label] = float(result["wall_s"])
        return result

    def run_step(self, key: str, seed: int, loss: str, which: str, **kw: Any) -> Dict[str, Any]:
        """Train step ``key`` of the budget for ``seed``; kept in ``self.results``."""
        step = STEPS[key]
        lr = self.lr["js"] / 10 if loss == "ft" else self.lr[loss]
        yaml_path, ov = self.arm(loss, which, lr, **kw)
        label = f"{step.step}_{step.key}_seed{seed}"
        result = self.train(label, yaml_path, ov, self.epochs(step), seed, self.estimate_s(step))
        self.results[label] = dict(result, step=step.step, name=step.name, lr=lr, loss=loss)
        return result

    def train_teacher(self) -> float:
        """Train the teacher on all labels (or evaluate the given one); returns its test top-1."""
        if not self.args.teacher:
            yaml_path, ov = self.arm("ce", "full", 0.1)
            ov = ov[:-1] + [f"Arch.name={self.args.teacher_arch}"]
            step = STEPS["teacher"]
            result = self.train(f"T_teacher_seed{self.seeds[0]}", os.path.join(QS, YAML["teacher"]), ov,
                                self.epochs(step), self.seeds[0], self.estimate_s(step))
            self.teacher = result["best_model"]
            return result["top1"]
        self.teacher = os.path.abspath(self.args.teacher)
        marker = os.path.join(self.work, "teacher_eval", hashlib.sha1(self.teacher.encode()).hexdigest()[:8] + ".json")
        if not os.path.isfile(marker):
            from ppssld.config import load_config
            from ppssld.engine.builder import build_eval_pieces, build_full_model, prepare_runtime
            from ppssld.engine.evaluator import evaluate
            from ppssld.utils.io import atomic_write_json

            _, ov = self.arm("ce", "full", 0.1)
            config = load_config(os.path.join(QS, YAML["teacher"]), ov[:-1] + [
                f"Arch.name={self.args.teacher_arch}", f"Global.pretrained_model={self.teacher}"])
            prepare_runtime(config)
            loader, metrics, _ = build_eval_pieces(config)
            atomic_write_json(marker, evaluate(build_full_model(config), loader, metrics))
        return float(load_json(marker)["top1"])

    def tune(self) -> None:
        """Pick the LR of each loss (CE, KD, JS) by held-out top-1 on 20% of L; fine-tune uses JS LR / 10."""
        train, val = self.tune_split()
        epochs, tic = max(1, round(self.args.tune_epochs * self.args.scale)), time.time()
        for arm in TUNE_ARMS:
            scores = {}
            for lr in floats(self.args.lr_grid):
                yaml_path, ov = self.arm(arm, "student", lr, train=train, val=val)
                scores[lr] = self.train(f"tune_{arm}_lr{lr}", yaml_path, ov, epochs, self.seeds[0], 0.0)["top1"]
            self.lr[arm] = max(scores, key=lambda x: (scores[x], -abs(x - 0.1)))
            self.tune_report[arm] = {"held_out_top1": {str(k): v for k, v in scores.items()}, "chosen": self.lr[arm]}
        self.lr_source = f"tuned: best held-out top-1 on 20% of L ({epochs} epochs, trained on the other 80%)"
        self.progress("tune", dict(self.units)["tune"], time.time() - tic)

    def mine(self) -> Dict[str, Any]:
        """Top-k per class from the first --pool images of U, de-duplicated against the test set, once."""
        from ppssld.config import load_config
        from ppssld.mining.pipeline import mine
        from ppssld.mining.teacher import teacher_from_config
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
            self.progress(label, self.estimate_s(STEPS["mine"]), time.time() - tic)
        else:
            logger.info("[Ladder] %s: finished earlier, skipped (%s)", label, marker)
            self.progress(label, 0.0, None)
        result = load_json(marker)
        self.walls[label] = float(result["wall_s"])
        self.mined = result["selected_list"]
        return result

    def transfer(self, source: str, seed: int) -> Dict[str, Any]:
        """Fine-tune the student of run ``source`` on digits with lr_mult_list, from plain-key weights."""
        import paddle

        from ppssld.arch.weights import load_state_dict, strip_prefix
        from ppssld.arch.zoo import build_backbone
        from ppssld.utils.errors import ConfigError

        state = load_state_dict(self.results[source]["best_model"])
        if any(k.startswith("Student.") for k in state):
            state = strip_prefix(state, "Student")
        source_classes, target_classes = DATASETS[self.args.dataset]["classes"], DIGITS["classes"]
        dropped = sorted(k for k in state if k.startswith("fc.")) if source_classes != target_classes else []
        state = {k: v for k, v in state.items() if k not in dropped}
        path = os.path.join(self.work, "transfer", f"{source}_backbone.pdparams")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        paddle.save(state, path)
        mults = floats(self.args.lr_mult_list)
        try:  # ppssld refuses an lr_mult_list the backbone would ignore (paddleclas's MobileNetV3 does)
            build_backbone(self.args.student, class_num=target_classes, lr_mult_list=mults)
            applied = True
        except ConfigError as exc:
            applied = False
            logger.warning("[Ladder] transfer without lr_mult_list: %s", exc)
        yaml_path, ov = self.arm("ce", "transfer", self.args.transfer_lr)
        ov += [f"Arch.class_num={target_classes}", f"Global.pretrained_model={path}"]
        ov += [f"Arch.lr_mult_list={mults}"] if applied else []
        ov += ["Global.strict_load=False"] if dropped else []
        step, label = STEPS["transfer"], f"X_transfer_from_{source}"
        result = self.train(label, yaml_path, ov, self.epochs(step), seed, self.estimate_s(step))
        return {"source_run": source, "top1": result["top1"], "epochs": result["epochs"], "wall_s": result["wall_s"],
                "lr": self.args.transfer_lr, "lr_mult_list": mults, "lr_mult_list_applied": applied,
                "classifier": (f"dropped {dropped} ({source_classes} -> {target_classes} classes), loaded with "
                               "Global.strict_load: False") if dropped else
                f"kept: both have {target_classes} classes, loaded strictly"}

    # ---- the ladder ------------------------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        """Every stage in order; returns the results payload."""
        tic = time.time()
        self.prepare()
        teacher_top1 = self.train_teacher()
        if self.args.tune:
            self.tune()
        s1, s2 = self.seeds[0], self.seeds[:2]
        self.run_step("ce_full", s1, "ce", "full")
        for seed in s2:
            self.run_step("ce_L", seed, "ce", "student")
        self.run_step("kd_L", s1, "kd", "student")
        self.run_step("js_L", s1, "js", "student")
        self.run_step("js_long", s1, "js", "student")
        mining = self.mine()
        for seed in s2:
            self.run_step("js_mined", seed, "js", "student", unlabeled=self.mined)
        for seed in s2:
            self.run_step("finetune", seed, "ft", "student",
                          pretrained=self.results[f"5_js_mined_seed{seed}"]["best_model"])
        transfer = {"dataset": "digits (scikit-learn, 8x8 upsampled to 32x32)",
                    "baseline_step1": self.transfer(f"1_ce_L_seed{s1}", s1),
                    "ssld_step6": self.transfer(f"6_finetune_seed{s1}", s1)}
        return self.payload(teacher_top1, mining, transfer, time.time() - tic)

    def payload(self, teacher_top1: float, mining: Dict[str, Any], transfer: Dict[str, Any],
                wall: float) -> Dict[str, Any]:
        """The results JSON (command, machine and date are added by ``common.write_results``)."""
        keys = ("name", "seed", "epochs", "images_seen", "wall_s", "top1", "lr", "loss", "resumed")
        steps = [dict({"step": int(r["step"])}, **{k: r[k] for k in keys}) for r in self.results.values()]
        a = self.args
        settings = {"dataset": a.dataset, "student": a.student, "teacher": self.teacher, "teacher_arch": a.teacher_arch,
                    "scale": a.scale, "seeds": self.seeds, "js_weight": a.js_weight, "k_per_class": a.k,
                    "pool": self.sizes()["U"], "kd": "DistillationGTCELoss 1.0 + KLDivLoss 1.0 (T=4, T^2 included)",
                    "lr": self.lr, "lr_source": self.lr_source, "limit_train": a.limit_train, "limit_val": a.limit_val,
                    "top1": "fraction, test set, after the last epoch"}
        return {"teacher_top1": teacher_top1, "steps": steps, "transfer": transfer, "mining": mining,
                "settings": settings, "tune": self.tune_report,
                "total_wall_s": round(sum(self.walls.values()), 1), "invocation_wall_s": round(wall, 1),
                "wall_s_by_run": self.walls,
                "budget": self.budget_table()}


def markdown(p: Dict[str, Any]) -> str:
    """``ladder.md``: the ladder table, the transfer table and the settings."""
    base = [s["top1"] for s in p["steps"] if s["step"] == 1]
    ref, t, m = sum(base) / len(base), p["transfer"], p["mining"]
    rows = ["| step | name | seed | images seen | epochs | wall | test top-1 | delta vs step 1 |", "|" + "---|" * 8]
    rows += [f"| {s['step']} | {s['name']} | {s['seed']} | {s['images_seen']:,} | {s['epochs']} | "
             f"{s['wall_s'] / 60:.1f} min | {100 * s['top1']:.2f}% | {100 * (s['top1'] - ref):+.2f} |"
             for s in p["steps"]]
    rows += ["", f"Teacher top-1: {100 * p['teacher_top1']:.2f}%. Delta: vs the mean of step 1's seeds. Mined "
             f"{m['selected']} of {m['scored']} pool images ({m['removed_duplicates']} test near-duplicates removed).",
             "", f"Transfer to {t['dataset']}:", "", "| backbone | top-1 | epochs | lr_mult_list applied |",
             "|" + "---|" * 4]
    rows += [f"| {k} ({v['source_run']}) | {100 * v['top1']:.2f}% | {v['epochs']} | {v['lr_mult_list_applied']} |"
             for k, v in t.items() if isinstance(v, dict)]
    rows += ["", f"Classifier: {t['ssld_step6']['classifier']}.", ""]
    if p.get("tune"):
        rows += [f"LR tuning ({p['settings']['lr_source']}):", "", "| loss | held-out top-1 per LR | chosen |",
                 "|---|---|---|"]
        rows += [f"| {arm} | " + ", ".join(f"{lr}: {100 * v:.2f}%" for lr, v in r["held_out_top1"].items()) +
                 f" | {r['chosen']} |" for arm, r in p["tune"].items()]
        rows.append("")
    rows += [f"Wall time of every run above, teacher, tuning and mining included (data preparation excluded): "
             f"{p['total_wall_s'] / 60:.0f} min.", "", f"Settings: `{json.dumps(p['settings'])}`",
             "", "Budget:", "", p["budget"], ""]
    return "\n".join(rows)


def plot(p: Dict[str, Any], path: str) -> None:
    """``ladder.png``: top-1 per step (bar = mean over seeds, dots = seeds), the teacher as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_step: Dict[int, List[float]] = {}
    names = {s["step"]: s["name"] for s in p["steps"]}
    for s in p["steps"]:
        by_step.setdefault(s["step"], []).append(100 * s["top1"])
    xs = sorted(by_step)
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.bar(xs, [sum(by_step[x]) / len(by_step[x]) for x in xs], color="#8fb3d9")
    for x in xs:
        ax.plot([x] * len(by_step[x]), by_step[x], "ko", ms=4)
    ax.axhline(100 * p["teacher_top1"], color="r", ls="--", label="teacher")
    top = max([100 * p["teacher_top1"]] + [max(v) for v in by_step.values()])
    ax.set_ylim(max(0.0, min(min(v) for v in by_step.values()) - 5), min(100.0, top + 2))
    ax.set_xticks(xs, [f"{x}\n" + textwrap.fill(names[x], 20) for x in xs], fontsize=7)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"SSLD ladder in miniature: {p['settings']['student']} on {p['settings']['dataset']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run (or with --plan, only print the budget of) the ladder; write the results."""
    from ppssld.utils.logger import setup_logging

    args = parse_args(argv)
    setup_logging()
    ladder = Ladder(args)
    if args.plan:
        print(ladder.budget_table())
        return {}
    logger.info("[Ladder] budget (OMP_NUM_THREADS=%s):\n%s", os.environ.get("OMP_NUM_THREADS"), ladder.budget_table())
    os.makedirs(ladder.work, exist_ok=True)
    setup_logging(os.path.join(ladder.work, "ladder.log"))
    payload = ladder.run()
    common.RESULTS = os.path.abspath(args.results_dir)
    path = common.write_results("ladder", payload, markdown(payload))
    plot(payload, os.path.join(common.RESULTS, "ladder.png"))
    logger.info("[Ladder] results: %s (+ ladder.md, ladder.png) in %.1f min", path, payload["total_wall_s"] / 60)
    return payload


if __name__ == "__main__":
    main()
