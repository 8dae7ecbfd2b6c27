"""The converged ladder's pieces: its data and lists, the two teachers, mining, growing soft-label caches and runs.

:class:`ConvergedRuns` reuses :class:`runs.LadderRuns` for configs (``arm``), resumable training (``train``) and the
transfer, and adds what the converged ladder needs: a labeled set of ``--labeled`` images, the oracle lists (the
mined images with their true labels), a weak and a strong teacher, one mining pass per (teacher, k), and soft-label
cache *families* (teacher, train list, unlabeled list, seed) whose views grow with the longest reader: a cache of V
views is made by hard-linking the views of the family's largest finished cache (a chunk depends only on its images
and view) and generating the rest. Every run, cache and mining pass is skipped when its marker exists.
"""
import argparse
import glob
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from benchmark.ladder.arms import FULL, Arm, Plan
from benchmark.ladder.runs import CACHE_DTYPE, LadderRuns, cpu_seconds, load_json, read_lines, short_hash, write_lines

logger = logging.getLogger("ppssld.benchmark.ladder")

PAIR = "model_name_pairs: [[Student, Teacher]]"
LOSS_OVERRIDES = {"dml": [f"Loss.Train=[{{DistillationDMLLoss: {{weight: 1.0, {PAIR}}}}}]"],
                  "kl": [f"Loss.Train=[{{KLDivLoss: {{weight: 1.0, temperature: 4.0, {PAIR}}}}}]"]}


class ConvergedRuns(LadderRuns):
    """State and pieces of a converged ladder invocation (``args``: ``converged.parse_args``)."""

    def __init__(self, args: argparse.Namespace) -> None:  # noqa: D107 (the classic plan is not built)
        self.args = args
        self.work = os.path.abspath(args.work)
        self.plan = Plan(args)
        self.seeds = self.plan.seeds
        self.data: Dict[str, Dict[str, str]] = {}
        self.teacher = ""  # LadderRuns.arm's teacher: replaced per run by the arm's own
        self.teachers: Dict[str, str] = {}
        self.teacher_report: Dict[str, Any] = {}
        self.mined: Dict[Tuple[str, str], str] = {}
        self.mining: Dict[str, Any] = {}
        self.caches: Dict[str, Dict[str, Any]] = {}
        self.refused: Dict[str, str] = {}
        self.walls: Dict[str, float] = {}
        self.cpus: Dict[str, float] = {}
        self.log: List[Dict[str, Any]] = []  # every training run: arm, kind, seed, epochs, setting, top-1
        self.truth: Dict[str, str] = {}  # pool image -> its true label (the oracle's lists only)
        self.done_est = self.done_wall = 0.0

    def progress(self, label: str, est: float, wall: Optional[float]) -> None:
        """Log the spent and the remaining time: the plan's expected total, rescaled by the speed seen."""
        if wall is not None and est > 0:
            self.done_est, self.done_wall = self.done_est + est, self.done_wall + wall
        ratio = self.done_wall / self.done_est if self.done_est > 0 else 1.0
        tot = self.plan.totals()
        spent = sum(self.walls.values()) + (wall or 0.0)
        logger.info("[Ladder] %s done; runs so far %.0f min; plan %.0f min expected, %.0f worst (x%.2f measured "
                    "speed: ~%.0f min expected in all)", label, spent / 60, tot["expected"] / 60, tot["worst"] / 60,
                    ratio, tot["expected"] * ratio / 60)

    # ---- data --------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """L (``--labeled``, class-balanced) and U from the 60,000 training images, the digits transfer set, the
        pool, the teachers' list of all labels, the tuning split; each made once, limited copies for smoke runs."""
        from ppssld.data.prepare import prepare_dataset

        lab = self.args.labeled
        root = os.path.join(self.work, "data")
        for which, spec in (("student", ("fashion_mnist", lab, FULL - lab)), ("transfer", ("digits", None, None))):
            out = os.path.join(root, which)
            if not os.path.isfile(os.path.join(out, "prepare_summary.json")):
                prepare_dataset(spec[0], out, labeled=spec[1], unlabeled=spec[2], seed=0)
        st, tr = os.path.join(root, "student"), os.path.join(root, "transfer")
        lt, lv = self.args.limit_train, self.args.limit_val
        train = read_lines(os.path.join(st, "train_list.txt"))
        truth = read_lines(os.path.join(st, "analysis", "unlabeled_true_labels.txt"))
        pool = read_lines(os.path.join(st, "unlabeled_list.txt"))[:min(self.plan.pool(), len(truth))]
        tag = f".first{lt}" if lt else ""
        d = {"root": os.path.join(st, "images"), "labels": os.path.join(st, "label_list.txt"),
             "train": self.lines(os.path.join(root, f"L{tag}.txt"), train[:lt] if lt else train),
             "val": self.lines(os.path.join(root, f"test{f'.first{lv}' if lv else ''}.txt"),
                               read_lines(os.path.join(st, "val_list.txt"))[:lv] if lv else
                               read_lines(os.path.join(st, "val_list.txt"))),
             "unlabeled": self.lines(os.path.join(root, f"pool{self.plan.pool()}.txt"), pool),
             "tune_train": os.path.join(root, f"L{tag}.tune_train.txt"),
             "tune_val": os.path.join(root, f"L{tag}.tune_val.txt")}
        self.data = {"student": d, "transfer": {
            "root": os.path.join(tr, "images"), "labels": os.path.join(tr, "label_list.txt"),
            "train": self.lines(os.path.join(root, f"digits_train{tag}.txt"),
                                read_lines(os.path.join(tr, "train_list.txt"))[:lt or None]),
            "val": self.lines(os.path.join(root, f"digits_val{f'.first{lv}' if lv else ''}.txt"),
                              read_lines(os.path.join(tr, "val_list.txt"))[:lv or None])}}
        everything = (train + truth)[:lt or None]
        self.data["full"] = dict(d, train=self.lines(os.path.join(root, f"all_labels{tag}.txt"), everything))
        self.tune_split()
        self.truth = {row.split()[0]: row.split()[-1] for row in truth}

    @staticmethod
    def lines(path: str, rows: List[str]) -> str:
        """Write ``rows`` to ``path`` atomically unless it already holds exactly them; returns ``path``."""
        if os.path.isfile(path) and read_lines(path) == rows:
            return path
        tmp = f"{path}.tmp{os.getpid()}"
        write_lines(tmp, rows)
        os.replace(tmp, path)
        return path

    def oracle_list(self, teacher: str, k: str, tune: bool) -> str:
        """L (or its tuning part) + the images mined by (teacher, k) with their TRUE labels (the oracle's list)."""
        d = self.data["student"]
        base = read_lines(d["tune_train" if tune else "train"])
        mined = [f"{row.split()[0]} {self.truth[row.split()[0]]}\n" for row in read_lines(self.mined[(teacher, k)])]
        name = f"oracle_{teacher}_k{k}{'_tune' if tune else ''}_{short_hash([base, mined])}.txt"
        return self.lines(os.path.join(self.work, "data", name), base + mined)

    # ---- teachers and mining ---------------------------------------------------------------------------------
    def train_teachers(self) -> None:
        """The weak teacher (teacher_ResNet18_1ep.yaml's recipe: 1 AdamW epoch on all labels) and the strong one:
        the weak one trained ``--strong-epochs`` - 1 epochs more (its own cosine schedule, from the weak weights)."""
        yaml_path, ov = self.arm("teacher", "full", None)
        seed = self.seeds[0]
        per_epoch = self.plan.fixed()["teachers"] / self.args.strong_epochs
        weak = self.train(f"T_teacher_weak_seed{seed}", yaml_path, ov, 1, seed, per_epoch)
        more = self.args.strong_epochs - 1
        strong = weak if more < 1 else self.train(
            f"T_teacher_strong_seed{seed}", yaml_path, ov + [f"Global.pretrained_model={weak['best_model']}"], more,
            seed, per_epoch * more)
        self.teachers = {"weak": weak["best_model"], "strong": strong["best_model"]}
        self.teacher_report = {
            "weak": {"top1": weak["top1"], "epochs": 1, "wall_s": weak["wall_s"],
                     "recipe": "teacher_ResNet18_1ep.yaml"},
            "strong": {"top1": strong["top1"], "epochs": 1 + max(0, more), "wall_s": weak["wall_s"] +
                       (strong["wall_s"] if more >= 1 else 0.0), "recipe": f"the weak teacher + {max(0, more)} "
                       f"epochs of the same recipe from its weights"}}

    def mine_list(self, teacher: str, k: str) -> str:
        """Top-k per class (k 'all': every pool image) mined by ``teacher`` from the pool, de-duplicated against
        the test set, once; returns the selected list."""
        from ppssld.utils.config import load_config
        from ppssld.mining.mine import mine
        from ppssld.teacher.frozen import teacher_from_config
        from ppssld.utils.io import atomic_write_json

        if (teacher, k) in self.mined:
            return self.mined[(teacher, k)]
        d = self.data["student"]
        per_class = len(read_lines(d["unlabeled"])) if k == "all" else int(k)
        ident = short_hash([self.teachers[teacher], d["unlabeled"], d["val"], per_class])
        out = os.path.join(self.work, "runs", f"M_mine_{teacher}_k{k}_{ident}")
        marker, label = os.path.join(out, "result.json"), f"M_mine_{teacher}_k{k}"
        if not os.path.isfile(marker):
            tic, cpu = time.time(), cpu_seconds()
            config = load_config(*self.teacher_config(teacher))
            report = mine(teacher_from_config(config), config, d["unlabeled"], d["root"], d["val"], per_class, out,
                          batch_size=128)
            atomic_write_json(marker, {"selected": report["selected"], "scored": report["scored"],
                                       "removed_duplicates": report["dedup"]["removed"], "k": k,
                                       "selected_list": os.path.join(out, "selected_list.txt"),
                                       "wall_s": round(time.time() - tic, 1), "cpu_s": round(cpu_seconds() - cpu, 1)})
        else:
            logger.info("[Ladder] %s: finished earlier, skipped (%s)", label, marker)
        result = load_json(marker)
        self.walls[label], self.cpus[label] = float(result["wall_s"]), float(result.get("cpu_s") or 0.0)
        self.mining[label] = result
        self.mined[(teacher, k)] = result["selected_list"]
        self.plan = Plan(self.args, {key: len(read_lines(path)) for key, path in self.mined.items()})
        return result["selected_list"]

    def teacher_config(self, teacher: str, train: Optional[str] = None, unlabeled: Optional[str] = None,
                       val: Optional[str] = None) -> Tuple[str, List[str]]:
        """(YAML, overrides) of a distillation config whose teacher is ``teacher`` (mining, cache generation)."""
        yaml_path, ov = self.arm("js", "student", 0.1, train=train, val=val, unlabeled=unlabeled)
        return yaml_path, self.with_teacher(ov, teacher)

    def with_teacher(self, overrides: List[str], teacher: str) -> List[str]:
        """``overrides`` with the teacher weights of ``teacher`` (weak or strong)."""
        key = "Arch.models.Teacher.pretrained="
        return [key + self.teachers[teacher] if o.startswith(key) else o for o in overrides]

    # ---- soft-label caches -----------------------------------------------------------------------------------
    def cache(self, teacher: str, train: str, unlabeled: Optional[str], val: str, seed: int, views: int,
              reader: str) -> str:
        """The folder of a cache of ``views`` views of (teacher, train + unlabeled, seed), made once: the family's
        largest finished smaller cache lends its views by hard links, the rest is generated (resumable)."""
        from ppssld.cache.generate import generate
        from ppssld.utils.config import load_config
        from ppssld.utils.io import atomic_write_json

        family = short_hash([self.teachers[teacher], train, unlabeled, seed, self.args.cache_topk, CACHE_DTYPE])
        name = f"C_{teacher}_{os.path.basename(train)[:-4]}{'_mined' if unlabeled else ''}_seed{seed}_{family}"
        out = os.path.join(self.work, "caches", f"{name}_v{views}")
        marker = out + ".json"
        if not os.path.isfile(marker):
            linked = self.link_views(name, out, views)
            yaml_path, ov = self.teacher_config(teacher, train, unlabeled, val)
            config = load_config(yaml_path, ov + [f"Global.seed={seed}", f"Global.epochs={views}"])
            logger.info("[Ladder] %s: %d views (%d linked from a smaller cache) for %s", name, views, linked, reader)
            tic, cpu = time.time(), cpu_seconds()
            stats = generate(config, out, views, self.args.cache_topk, prob_dtype=CACHE_DTYPE)
            atomic_write_json(marker, {"label": name, "dir": out, "views": views, "linked_views": linked,
                                       "seed": seed, "teacher": teacher, "topk": self.args.cache_topk,
                                       "dtype": CACHE_DTYPE, "images": load_json(stats["manifest"])["num_images"],
                                       "wall_s": round(time.time() - tic, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
                                       "generate": stats})
        result = load_json(marker)
        label = f"{name}_v{views}"
        self.walls[label], self.cpus[label] = float(result["wall_s"]), float(result.get("cpu_s") or 0.0)
        self.caches.setdefault(label, dict(result, readers=[]))["readers"].append(reader)
        return out

    @staticmethod
    def link_views(name: str, out: str, views: int) -> int:
        """Hard-link the views of the family's largest finished cache below ``views`` into ``out``; returns how many
        views it lent (0: none finished yet)."""
        done = []
        for path in glob.glob(os.path.join(os.path.dirname(out), f"{glob.escape(name)}_v*.json")):
            tail = path[len(os.path.join(os.path.dirname(out), name)) + 2:-5]
            if tail.isdigit() and int(tail) < views:
                done.append(int(tail))
        if not done:
            return 0
        src = os.path.join(os.path.dirname(out), f"{name}_v{max(done)}")
        for view in range(max(done)):
            sub = f"v{view:04d}"
            os.makedirs(os.path.join(out, sub), exist_ok=True)
            for fname in os.listdir(os.path.join(src, sub)):
                dst = os.path.join(out, sub, fname)
                if not os.path.exists(dst):
                    os.link(os.path.join(src, sub, fname), dst)
        return max(done)

    # ---- one run ---------------------------------------------------------------------------------------------
    def run(self, arm: Arm, kind: str, seed: int, epochs: int, setting: Dict[str, float], tune: bool = False,
            pretrained: Optional[str] = None) -> Dict[str, Any]:
        """Train ``arm`` for ``seed`` and ``epochs`` under ``setting`` (lr, wd); ``tune``: on 80% of L, scored on
        the held-out 20%; ``pretrained``: start weights (the fine-tune). Logged in :attr:`log`."""
        d = self.data["student"]
        train, val = d["tune_train" if tune else "train"], d["tune_val" if tune else "val"]
        unl = self.mine_list(arm.teacher, arm.k) if arm.k and arm.loss != "ce" else None
        if arm.loss == "ce":
            if arm.labels:
                self.mine_list("strong", arm.k)
                train = self.oracle_list("strong", arm.k, tune)
            yaml_path, ov = self.arm("ce", "student", setting["lr"], train=train, val=val)
        else:
            yaml_path, ov = self.arm("ft" if arm.loss == "ft" else "js", "student", setting["lr"], train=train,
                                     val=val, unlabeled=unl, pretrained=pretrained)
            ov = self.with_teacher(ov, arm.teacher) + LOSS_OVERRIDES.get(arm.loss, [])
        ov.append(f"Optimizer.regularizer.coeff={setting['wd']}")
        origin = f"_from{short_hash(pretrained)[:4]}" if pretrained else ""
        label = f"{arm.key}{'_tune' if tune else ''}_seed{seed}_ep{epochs}_lr{setting['lr']:g}_wd{setting['wd']:g}" \
                f"{origin}"
        teacher = "-"
        if arm.loss != "ce":
            why = self.cache_refusal(yaml_path, ov)
            if why is None:
                ov.append(f"Global.soft_label_cache={self.cache(arm.teacher, train, unl, val, seed, epochs, label)}")
                teacher = "cache"
            else:
                logger.warning("[Ladder] %s trains online: the soft-label cache is refused: %s", label, why)
                self.refused[label], teacher = why, "online"
        images = len(read_lines(train)) + (len(read_lines(unl)) if unl else 0)
        est = self.plan.run_s(images, epochs, len(read_lines(val)), cached=arm.loss != "ce")
        result = self.train(label, yaml_path, ov, epochs, seed, est)
        if any(entry["label"] == label for entry in self.log):
            return result  # the search's run at the chosen budget, asked for again as seed 1's
        self.log.append({"arm": arm.key, "kind": kind, "seed": seed, "epochs": epochs, "lr": setting["lr"],
                         "wd": setting["wd"], "split": "held-out 20% of L" if tune else "test", "teacher": teacher,
                         "top1": result["top1"], "images_seen": result["images_seen"], "wall_s": result["wall_s"],
                         "cpu_s": result.get("cpu_s"), "label": label})
        return result
