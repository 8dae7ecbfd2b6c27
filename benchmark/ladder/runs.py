"""The ladder's execution layer: data preparation, run configs, soft-label caches and resumable training runs.

:class:`LadderRuns` turns the planned :class:`budget.RunSpec` / :class:`budget.CacheSpec` objects
into ``load_config(<quick-start YAML>, overrides)`` + ``build_trainer(config).fit()`` runs and in-process
``ppssld.cache.generate`` calls, each in its own folder under ``--work`` with a result file that makes a re-run
skip it (an interrupted run resumes from its ``latest`` checkpoint, an interrupted cache from its last chunk).
``classic.py`` orders the steps; ``converged.py`` reuses the data, config and run pieces.
"""
import argparse
import datetime
import dataclasses
import hashlib
import json
import logging
import os
import resource
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from benchmark import common
from benchmark.ladder.budget import DATASETS, DIGITS, Plan, RunSpec

QS = os.path.join(common.ROOT, "ppcls_configs", "quick_start", "fashion_mnist")
RESULTS = common.results_dir(__file__)  # benchmark/results/ladder/: every ladder result file goes here
YAML = {"teacher": "teacher_ResNet18_1ep.yaml", "ce": "student_MV3_small_x0_35_ce.yaml",
        "kd": "ssld_R18_MV3_small_x0_35.yaml", "js": "ssld_R18_MV3_small_x0_35.yaml",
        "ft": "finetune_R18_MV3_small_x0_35.yaml"}
KD_LOSS = ("Loss.Train=[{DistillationGTCELoss: {weight: 1.0, model_names: [Student]}}, "
           "{KLDivLoss: {weight: 1.0, temperature: 4.0, model_name_pairs: [[Student, Teacher]]}}]")
CACHE_DTYPE = "float16"  # tools/cache_soft_labels.py's default

logger = logging.getLogger("ppssld.benchmark.ladder")


def command_line() -> str:
    """This invocation as the results record it: ``-m benchmark.ladder <args>`` (run from the repository root)."""
    return " ".join(["-m benchmark.ladder"] + sys.argv[1:])


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished children (the loader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


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


def short_hash(value: Any) -> str:
    """8 hex digits of a JSON-able value's SHA-1."""
    return hashlib.sha1(json.dumps(value).encode()).hexdigest()[:8]


class LadderRuns:
    """State of a ladder invocation and the ways to run its pieces; every run and cache is skipped when its
    result file exists."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = os.path.abspath(args.work)
        self.plan = Plan(args)
        self.seeds = self.plan.seeds
        self.lr: Dict[str, float] = {"ce": 0.1, "kd": 0.1, "js": 0.1}
        self.lr_source = "YAML default (--tune not used)"
        self.data: Dict[str, Dict[str, str]] = {}
        self.teacher, self.mined = "", ""
        self.results: Dict[str, Dict[str, Any]] = {}
        self.twins: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self.caches: Dict[str, Dict[str, Any]] = {}
        self.refused: Dict[str, str] = {}
        self.converged: Dict[str, Any] = {}
        self.tune_report: Dict[str, Any] = {}
        self.done_est = self.done_wall = 0.0
        self.walls: Dict[str, float] = {}  # label -> wall seconds of every run and cache, this invocation's or not
        self.cpus: Dict[str, float] = {}  # label -> CPU seconds of every training run (0 for runs before cpu_s)
        self.units = self.plan.units()

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
        basis = f"budget x{ratio:.2f}" if self.done_est > 0 else "cost model, nothing timed yet"
        logger.info("[Ladder] %d/%d done (%s); ~%.0f min left (%s), ETA %s", idx + 1, len(labels), label,
                    left / 60, basis, eta.strftime("%H:%M"))

    # ---- data ------------------------------------------------------------------------------------------------
    def paths(self) -> Dict[str, Dict[str, str]]:
        """Where :meth:`prepare` puts each data set's folders and lists (pure: nothing is read or written)."""
        out = {}
        for which in ("student", "full", "transfer"):
            root = os.path.join(self.work, "data", which)
            out[which] = {"root": os.path.join(root, "images"), "labels": os.path.join(root, "label_list.txt")}
            for role, limit in (("train", self.args.limit_train), ("val", self.args.limit_val),
                                ("unlabeled", self.args.limit_train)):
                path = os.path.join(root, f"{role}_list.txt")
                out[which][role] = f"{path[:-4]}.first{limit}.txt" if limit else path
        data = os.path.join(self.work, "data")
        out["student"]["tune_train"] = os.path.join(data, "tune_train.txt")
        out["student"]["tune_val"] = os.path.join(data, "tune_val.txt")
        return out

    def prepare(self) -> None:
        """Labeled/unlabeled split, a fully labeled copy, the digits transfer set (each made once), the limited
        copies of their lists and the tuning split."""
        from ppssld.data.prepare import prepare_dataset

        ds, tic = self.args.dataset, time.time()
        n = DATASETS[ds]
        specs = {"student": (ds, n["L"], n["full"] - n["L"]), "full": (ds, None, None),
                 "transfer": ("digits", None, None)}
        self.data = self.paths()
        made = False
        for which, (name, labeled, unlabeled) in specs.items():
            out = os.path.join(self.work, "data", which)
            if not os.path.isfile(os.path.join(out, "prepare_summary.json")):
                prepare_dataset(name, out, labeled=labeled, unlabeled=unlabeled, seed=0)
                made = True
            for role, limit in (("train", self.args.limit_train), ("val", self.args.limit_val),
                                ("unlabeled", self.args.limit_train)):
                full = os.path.join(out, f"{role}_list.txt")
                if limit and os.path.isfile(full):
                    write_lines(self.data[which][role], read_lines(full)[:limit])
                elif not os.path.isfile(full):
                    self.data[which][role] = full
        self.tune_split()
        # data found from an earlier invocation is not a timed unit: its ~0 s would drag the ETA's ratio to 0
        self.progress("prepare", self.units[0][1], time.time() - tic if made else None)

    def tune_split(self) -> None:
        """L split into 80% train / 20% held-out (every 5th image of each class), as two lists."""
        seen: Dict[str, int] = {}
        parts: Tuple[List[str], List[str]] = ([], [])
        for row in read_lines(self.data["student"]["train"]):
            seen[row.split()[-1]] = seen.get(row.split()[-1], 0) + 1
            parts[seen[row.split()[-1]] % 5 == 0].append(row)
        write_lines(self.data["student"]["tune_train"], parts[0])
        write_lines(self.data["student"]["tune_val"], parts[1])

    @staticmethod
    def limited(path: str, limit: Optional[int]) -> str:
        """``path``, or a copy holding its first ``limit`` rows."""
        if not limit or not os.path.isfile(path):
            return path
        return write_lines(f"{path[:-4]}.first{limit}.txt", read_lines(path)[:limit])

    # ---- configs ---------------------------------------------------------------------------------------------
    def arm(self, loss: str, which: str, lr: Optional[float], train: Optional[str] = None, val: Optional[str] = None,
            unlabeled: Optional[str] = None, pretrained: Optional[str] = None,
            cache: Optional[str] = None) -> Tuple[str, List[str]]:
        """(YAML, overrides) for a loss (teacher, ce, kd, js, ft) trained on data set ``which``; ``cache``: the
        soft-label cache folder the arm reads (``Global.soft_label_cache``), None: online teacher."""
        d = self.data[which]
        ov = [f"DataLoader.Train.dataset.image_root={d['root']}", f"DataLoader.Eval.dataset.image_root={d['root']}",
              f"DataLoader.Train.dataset.cls_label_path={train or d['train']}",
              f"DataLoader.Eval.dataset.cls_label_path={val or d['val']}", f"Global.class_names={d['labels']}"]
        ov += [f"Optimizer.lr.learning_rate={lr}"] if lr is not None else []  # None: the recipe's LR (teacher)
        if self.args.batch_size:
            ov.append(f"DataLoader.Train.sampler.batch_size={self.args.batch_size}")
        if self.args.workers is not None:
            ov += [f"DataLoader.{m}.loader.num_workers={self.args.workers}" for m in ("Train", "Eval")]
        if loss in ("ce", "teacher"):
            arch = self.args.teacher_arch if loss == "teacher" else self.args.student
            return os.path.join(QS, YAML[loss]), ov + [f"Arch.name={arch}"]
        ov += [f"Arch.models.Student.name={self.args.student}", f"Arch.models.Teacher.name={self.args.teacher_arch}",
               f"Arch.models.Teacher.pretrained={self.teacher}"]
        if loss != "ft":
            ov.append(f"DataLoader.Train.dataset.unlabeled_label_path={unlabeled or ''}")
        if pretrained:
            ov.append(f"Global.pretrained_model={pretrained}")
        ov.append(KD_LOSS if loss == "kd" else f"Loss.Train.JSDivLoss.weight={self.args.js_weight}")
        if cache:
            ov.append(f"Global.soft_label_cache={cache}")
        return os.path.join(QS, YAML[loss]), ov

    def lists_of(self, data: str) -> Dict[str, Optional[str]]:
        """The train / val / unlabeled lists of a plan data kind (L, L+mined, tune, full)."""
        d = self.data["student"]
        if data == "tune":
            return {"train": d["tune_train"], "val": d["tune_val"], "unlabeled": None}
        return {"train": None, "val": None, "unlabeled": self.mined if data == "L+mined" else None}

    def cache_path(self, label: str) -> str:
        """The folder of cache ``label`` (named by what it is built from, so a new teacher gets a new one)."""
        spec = self.plan.runs()[1][label]
        lists = self.lists_of(spec.lists)
        ident = short_hash([self.teacher, self.data["student"]["train"], lists, spec.seed, spec.views, spec.topk,
                            CACHE_DTYPE])
        return os.path.join(self.work, "caches", f"{label}_{ident}")

    def spec_config(self, spec: RunSpec, lr: float, pretrained: Optional[str] = None) -> Tuple[str, List[str]]:
        """(YAML, overrides) of a planned run (its cache's folder included when it reads one)."""
        which = "full" if spec.data == "full" else "student"
        cache = self.cache_path(spec.cache) if spec.cache else None
        return self.arm(spec.loss, which, lr, pretrained=pretrained, cache=cache, **self.lists_of(spec.data))

    @staticmethod
    def cache_refusal(yaml_path: str, overrides: List[str]) -> Optional[str]:
        """Why the cache rules refuse this config (``ppssld.cache.rules``), or None when it may read a cache."""
        from ppssld.cache.manifest import teacher_entry
        from ppssld.cache.rules import check_cacheable, check_losses
        from ppssld.utils.config import load_config
        from ppssld.loss.combined import build_loss
        from ppssld.utils.errors import ConfigError

        config = load_config(yaml_path, overrides)
        try:
            check_cacheable(config)
            check_losses(build_loss(config["Loss"]["Train"], "Loss.Train").loss_func, teacher_entry(config)[0])
        except ConfigError as exc:
            return str(exc)
        return None

    # ---- runs ------------------------------------------------------------------------------------------------
    def ensure_cache(self, label: str) -> str:
        """Generate cache ``label`` once (resumable: finished chunks are kept); returns its folder."""
        from ppssld.cache.generate import generate
        from ppssld.utils.config import load_config
        from ppssld.utils.io import atomic_write_json

        spec = self.plan.runs()[1][label]
        out = self.cache_path(label)
        if label in self.caches:  # generated (or found) earlier in this invocation
            return out
        marker = out + ".json"
        if os.path.isfile(marker):
            logger.info("[Ladder] %s: finished earlier, skipped (%s)", label, marker)
            self.progress(label, spec.est_s, None)
        else:
            yaml_path, ov = self.arm("js", "student", 0.1, **self.lists_of(spec.lists))
            config = load_config(yaml_path, ov + [f"Global.seed={spec.seed}", f"Global.epochs={spec.views}"])
            logger.info("[Ladder] %s: generating %d views x top-%d (%s) of the teacher's soft labels for %s, seed %d, "
                        "read by %s (est. %.1f min) in %s", label, spec.views, spec.topk, CACHE_DTYPE, spec.lists,
                        spec.seed, ", ".join(spec.readers), spec.est_s / 60, out)
            tic = time.time()
            stats = generate(config, out, spec.views, spec.topk, prob_dtype=CACHE_DTYPE)
            images = load_json(stats["manifest"])["num_images"]
            atomic_write_json(marker, {"label": label, "dir": out, "lists": spec.lists, "seed": spec.seed,
                                       "views": spec.views, "topk": spec.topk, "dtype": CACHE_DTYPE, "images": images,
                                       "wall_s": round(time.time() - tic, 1), "generate": stats})
            self.progress(label, spec.est_s, time.time() - tic)
        result = load_json(marker)
        self.walls[label] = float(result["wall_s"])
        self.caches[label] = dict(result, readers=list(spec.readers))
        return out

    def train(self, label: str, yaml_path: str, overrides: List[str], epochs: int, seed: int,
              est: float) -> Dict[str, Any]:
        """One training run in its own folder (named by label and a hash of its settings); skipped when done."""
        from ppssld.utils.config import load_config
        from ppssld.engine.builder import build_trainer, save_dir
        from ppssld.utils.io import atomic_write_json

        overrides = overrides + [f"Global.seed={seed}", f"Global.epochs={epochs}", f"Global.eval_interval={epochs}"]
        out = os.path.join(self.work, "runs", f"{label}_{short_hash([os.path.basename(yaml_path), overrides])}")
        marker = os.path.join(out, "result.json")
        if os.path.isfile(marker):
            logger.info("[Ladder] %s: finished earlier, skipped (%s)", label, marker)
            self.progress(label, est, None)
            result = load_json(marker)
            self.walls[label] = float(result["wall_s"])
            self.cpus[label] = float(result.get("cpu_s") or 0.0)
            return result
        config = load_config(yaml_path, overrides + [f"Global.output_dir={out}"])
        latest = os.path.join(save_dir(config), "latest.pdparams")
        if os.path.isfile(latest):
            logger.info("[Ladder] %s: resuming the interrupted run from %s", label, latest)
            config["Global"]["checkpoints"] = latest
        cache = config["Global"].get("soft_label_cache")
        logger.info("[Ladder] %s: starting (%d epochs, est. %.1f min, teacher: %s) in %s", label, epochs, est / 60,
                    f"soft-label cache {cache}" if cache else "online" if "Teacher" in str(overrides) else "none",
                    out)
        resumed = bool(config["Global"].get("checkpoints"))
        tic, cpu = time.time(), cpu_seconds()
        trainer = build_trainer(config)
        fit = trainer.fit()
        batch = int(config["DataLoader"]["Train"]["sampler"]["batch_size"])
        result = {"label": label, "seed": seed, "epochs": epochs, "top1": round(float(fit["best_metric"]), 5),
                  "images_seen": len(trainer.train_loader) * batch * epochs, "wall_s": round(time.time() - tic, 1),
                  "cpu_s": round(cpu_seconds() - cpu, 1),
                  "resumed": resumed, "best_model": os.path.join(save_dir(config), "best_model"),
                  "config": os.path.basename(yaml_path), "overrides": overrides, "soft_label_cache": cache}
        atomic_write_json(marker, result)
        self.progress(label, est, result["wall_s"])
        self.walls[label] = float(result["wall_s"])
        self.cpus[label] = float(result.get("cpu_s") or 0.0)
        return result

    def transfer_from(self, best_model: str, source: str, label: str, seed: int, epochs: int, est: float,
                      source_classes: int) -> Dict[str, Any]:
        """Fine-tune the student weights ``best_model`` (of run ``source``) on digits with lr_mult_list, from
        plain-key weights; the run is ``label``."""
        import paddle

        from ppssld.arch.weights import load_state_dict, strip_prefix
        from ppssld.arch.zoo import build_backbone
        from ppssld.utils.errors import ConfigError

        state = load_state_dict(best_model)
        if any(k.startswith("Student.") for k in state):
            state = strip_prefix(state, "Student")
        target_classes = DIGITS["classes"]
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
        result = self.train(label, yaml_path, ov, epochs, seed, est)
        return {"source_run": source, "top1": result["top1"], "epochs": result["epochs"], "wall_s": result["wall_s"],
                "cpu_s": result.get("cpu_s"), "lr": self.args.transfer_lr, "lr_mult_list": mults,
                "lr_mult_list_applied": applied,
                "classifier": (f"dropped {dropped} ({source_classes} -> {target_classes} classes), loaded with "
                               "Global.strict_load: False") if dropped else
                f"kept: both have {target_classes} classes, loaded strictly"}

    def spec(self, label: str, key: str = "", seed: int = 0, epochs: int = 0) -> RunSpec:
        """The planned run ``label`` (the plan is redrawn once the mined list's size is known). A --converge budget
        past the plan's worst case (the cost model's guess; the runner decides by the speed it sees) is the first
        budget of step ``key`` for ``seed``, with ``epochs`` and a cost-model estimate."""
        runs = self.plan.runs()[0]
        found = next((r for r in runs if r.label == label), None)
        if found is None and self.plan.converging(key) and epochs:
            first = next(r for r in runs if r.key == key and r.seed == seed)
            found = dataclasses.replace(first, label=label, epochs=epochs, est_s=self.plan.run_s(key, epochs))
        if found is None:
            raise KeyError(f"{label} is not a run of the ladder's plan")
        return found

    def run_spec(self, spec: RunSpec, lr: float, pretrained: Optional[str] = None) -> Dict[str, Any]:
        """Train a planned run, from its cache unless the cache rules refuse its config (then online, reported)."""
        yaml_path, ov = self.spec_config(spec, lr, pretrained)
        teacher = "-" if spec.loss in ("ce", "teacher") else "online"
        if spec.cache:
            why = self.cache_refusal(yaml_path, ov)
            if why is None:
                self.ensure_cache(spec.cache)
                teacher = "cache"
            else:
                logger.warning("[Ladder] %s trains online: the soft-label cache is refused: %s", spec.label, why)
                self.refused[spec.label] = why
                yaml_path, ov = self.spec_config(RunSpec(**dict(vars(spec), cache=None)), lr, pretrained)
        result = self.train(spec.label, yaml_path, ov, spec.epochs, spec.seed, spec.est_s)
        return dict(result, teacher=teacher, lr=lr, loss=spec.loss)

