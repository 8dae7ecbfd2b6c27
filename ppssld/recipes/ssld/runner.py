"""The SSLD recipe end to end: prepare -> teacher -> mine -> (CE baseline) -> distill -> fine-tune -> export.

Each stage writes into ``<output_dir>/<stage>/`` and, once complete, a ``stage.json`` with its
results and a fingerprint of what it was built from: its pipeline settings, its training config
after overrides, the contents of its input files (label lists, teacher weights, the previous
stage's best model) and the digests of the stages whose outputs it reads. A re-run skips a stage only when
that fingerprint still matches; otherwise it says which input changed, moves the old folder to
``<output_dir>/.stale/<stage>`` and runs it again (and so every later stage, whose fingerprints
hold its digest). An interrupted stage whose inputs are unchanged resumes: a training stage from
its ``latest`` checkpoint. The stage configs are ordinary training YAMLs; the pipeline only points
their data, teacher and output paths at the previous stages' outputs through ``-o`` overrides.
"""
import copy
import json
import logging
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml

from ppssld.recipes.ssld import data_stage
from ppssld.recipes.ssld.stage_cache import cache_teacher, stage_settings, wants_cache
from ppssld.recipes.ssld.stages import BY_NAME, LAYOUT, STAGES, Stage
from ppssld.recipes.ssld.summary import warmup_note
from ppssld.utils.config import get, load_config
from ppssld.utils.fingerprint import canonical, differences, digest, file_fingerprint
from ppssld.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


class Pipeline:
    """Runs the stages in order, skipping those already complete.

    Args:
        cfg: a validated pipeline config.
    """

    def __init__(self, cfg: Dict[str, Any]) -> None:
        self.cfg = cfg
        self.out = cfg["output_dir"]
        self.results: Dict[str, Dict[str, Any]] = {}

    def stage_dir(self, stage: str) -> str:
        """``<output_dir>/<stage>``."""
        return os.path.join(self.out, stage)

    def _enabled(self, stage: str) -> bool:
        return BY_NAME[stage].enabled(self.cfg)

    def runner(self, stage: Stage) -> Callable[[], Dict[str, Any]]:
        """The method that builds ``stage``: ``_<name>``."""
        return getattr(self, f"_{stage.name}")

    def run(self) -> Dict[str, Dict[str, Any]]:
        """Run every enabled stage whose fingerprint changed; returns each stage's results."""
        start = time.time()
        enabled = [s for s in STAGES if s.enabled(self.cfg)]
        for number, record in enumerate(enabled, start=1):
            stage = record.name
            tag = f"[Pipeline][{number}/{len(enabled)}] {stage}"
            fingerprint = self.fingerprint(stage)
            marker = os.path.join(self.stage_dir(stage), "stage.json")
            started = os.path.join(self.stage_dir(stage), "fingerprint.json")
            recorded = _read_json(marker)
            if recorded is not None and canonical(recorded.get("fingerprint")) == canonical(fingerprint):
                self.results[stage] = recorded
                logger.info("%s: already complete with the same inputs, skipped (%s)", tag, marker)
                continue
            previous = recorded.get("fingerprint") if recorded is not None else _read_json(started)
            if previous is not None and canonical(previous) != canonical(fingerprint):
                logger.info("%s: inputs changed since it was %s: %s", tag,
                            "built" if recorded is not None else "started",
                            "; ".join(differences(previous, fingerprint)))
                self._set_aside(stage)
            elif recorded is not None:
                logger.info("%s: %s records no fingerprint (an older ppssld): running it again", tag, marker)
                self._set_aside(stage)
            elif previous is not None:
                logger.info("%s: resuming the interrupted stage (same inputs)", tag)
            logger.info("%s: starting (%.0f s elapsed)", tag, time.time() - start)
            os.makedirs(self.stage_dir(stage), exist_ok=True)
            atomic_write_json(started, fingerprint)
            tic = time.time()
            result = self.runner(record)()
            result["wall_s"] = round(time.time() - tic, 1)
            result["fingerprint"] = fingerprint
            result["digest"] = digest({k: v for k, v in result.items() if k != "wall_s"})
            atomic_write_json(marker, result)
            self.results[stage] = result
            logger.info("%s: done in %.0f s", tag, result["wall_s"])
        return self.results

    def _set_aside(self, stage: str) -> None:
        """Move a stage's old outputs to ``<output_dir>/.stale/<stage>`` (replacing an older copy)."""
        folder = self.stage_dir(stage)
        if not os.path.isdir(folder):
            return
        stale = os.path.join(self.out, ".stale", stage)
        if os.path.isdir(stale):
            shutil.rmtree(stale)
        os.makedirs(os.path.dirname(stale), exist_ok=True)
        os.replace(folder, stale)
        logger.info("moved the outdated %s outputs to %s", stage, stale)

    # -- fingerprints -------------------------------------------------------------------------
    def fingerprint(self, stage: str) -> Dict[str, Any]:
        """What ``stage`` is built from: its pipeline settings, its config after overrides, its
        input files' contents and the digests of the stages it reads (``Stage.reads``)."""
        settings, config_stage, extra, files = self._inputs(stage)
        result: Dict[str, Any] = {"settings": settings,
                                  "inputs": {name: file_fingerprint(path) for name, path in sorted(files.items())},
                                  "upstream": {s: self.results[s].get("digest") for s in BY_NAME[stage].reads
                                               if s in self.results}}
        if config_stage is not None:
            result["config"] = digest(self._stage_config(config_stage, extra))
        return result

    def _inputs(self, stage: str) -> Tuple[Dict[str, Any], Optional[str], List[str], Dict[str, str]]:
        """(pipeline settings read, stage whose training config is used, its extra overrides, input files)."""
        cfg = self.cfg
        if stage == "data":
            data = dict(cfg["data"])
            files = {"src": data["src"]} if data.get("src") and os.path.isfile(str(data["src"])) else {}
            return ({"data": data, "teacher_given": bool(cfg["teacher"].get("pretrained")), "layout": LAYOUT},
                    None, [], files)
        if stage == "teacher":
            if cfg["teacher"].get("pretrained"):
                return {"teacher": cfg["teacher"]}, None, [], {"weights": _params(cfg["teacher"]["pretrained"])}
            return {"teacher": cfg["teacher"]}, "teacher", self._data_overrides("teacher"), self._lists("teacher")
        files = self._lists("student")
        if stage == "baseline":
            return {"baseline": cfg["baseline"]}, "baseline", self._baseline_overrides(), files
        files["teacher_weights"] = _params(self.results["teacher"]["best_model"])
        if stage == "mine":
            settings = {"mine": cfg.get("mine") or {}, "distill": stage_settings(cfg["distill"], cache=False),
                        "seed": cfg["data"].get("seed")}
            return settings, "distill", self._data_overrides("student") + [self._teacher_override()], files
        if stage == "distill":
            unlabeled = self._distill_unlabeled()
            files["unlabeled"] = unlabeled
            return ({"distill": stage_settings(cfg["distill"])}, "distill",
                    self._data_overrides("student", unlabeled) + [self._teacher_override()], files)
        if stage == "finetune":
            files["distilled"] = _params(self.results["distill"]["best_model"])
            return {"finetune": stage_settings(cfg["finetune"])}, "finetune", self._finetune_overrides(), files
        last = "finetune" if "finetune" in self.results else "distill"
        files = {"student": _params(self.results[last]["best_model"])}
        return ({"export": cfg.get("export") or {}, "from": last}, last,
                self._data_overrides("student") + [self._teacher_override()], files)

    def _lists(self, which: str) -> Dict[str, str]:
        paths = self.results["data"][which]
        return {f"{which}_{key}": paths[key] for key in ("train", "unlabeled", "val", "labels") if key in paths}

    # -- stages -------------------------------------------------------------------------------
    def _data(self) -> Dict[str, Any]:
        """Write the images once; the student's lists and (unless a teacher is given) the teacher's
        fully labeled list both point at them (:func:`data_stage.prepare`)."""
        return data_stage.prepare(self.cfg, self.stage_dir("data"))

    def _data_overrides(self, which: str, unlabeled: Optional[str] = None) -> List[str]:
        paths = self.results["data"][which]
        items = [f"DataLoader.Train.dataset.image_root={paths['image_root']}",
                 f"DataLoader.Train.dataset.cls_label_path={paths['train']}",
                 f"DataLoader.Eval.dataset.image_root={paths['image_root']}",
                 f"DataLoader.Eval.dataset.cls_label_path={paths['val']}",
                 f"Global.class_names={paths['labels']}",
                 # the keys export and inference read: the main job's own folders, not the stage YAML's ./dataset/...
                 f"Global.save_inference_dir={self.stage_dir('export')}",
                 f"Infer.infer_imgs={os.path.join(paths['image_root'], 'val')}",
                 f"Infer.PostProcess.class_id_map_file={paths['labels']}"]
        if unlabeled is not None:
            items.append(f"DataLoader.Train.dataset.unlabeled_label_path={unlabeled}")
        return items

    def _overrides(self, stage: str, extra: List[str]) -> List[str]:
        """Every override a stage's training config gets: the section's own, then the pipeline's
        (output folder, seed, data and teacher paths)."""
        section = self.cfg[stage]
        items = list(section.get("overrides") or []) + [f"Global.output_dir={self.stage_dir(stage)}"]
        if self.cfg["data"].get("seed") is not None:
            items.append(f"Global.seed={int(self.cfg['data']['seed'])}")
        return items + extra

    def _stage_config(self, stage: str, extra: List[str]) -> Dict[str, Any]:
        return load_config(self.cfg[stage]["config"], self._overrides(stage, extra))

    def _train(self, stage: str, extra: List[str], report_teacher: bool = False) -> Dict[str, Any]:
        """Train one stage; ``report_teacher``: evaluate the frozen teacher once first (a given teacher's
        top-1 is unknown until then; a teacher trained in the teacher stage was evaluated there).

        The exact config it trains with is written as ``<checkpoint folder>/config.yaml`` (evaluate or
        export with it as it is); ``stage.json`` records the overrides that made it from the stage YAML."""
        from ppssld.engine.builder import build_trainer, save_dir
        from ppssld.arch.roles import teacher_name
        from ppssld.engine.teacher_report import report_frozen_models

        overrides = self._overrides(stage, extra)
        config = load_config(self.cfg[stage]["config"], overrides)
        cache = None
        if stage in ("distill", "finetune") and wants_cache(self.cfg[stage], stage):
            cache = cache_teacher(config, self.stage_dir(stage))
            overrides.append(f"Global.soft_label_cache={cache['dir']}")
            config = load_config(self.cfg[stage]["config"], overrides)
        folder = save_dir(config)
        os.makedirs(folder, exist_ok=True)
        config_file = os.path.join(folder, "config.yaml")
        atomic_write_text(config_file, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        latest = os.path.join(folder, "latest.pdparams")
        if os.path.isfile(latest):
            logger.info("%s: resuming the interrupted run from %s", stage, latest)
            config = copy.deepcopy(config)
            config["Global"]["checkpoints"] = latest
        trainer = build_trainer(config)
        teacher_top1, teachers_top1 = None, None
        if report_teacher and cache is not None:
            logger.info("%s: the given teacher's top-1 is not evaluated: with %s.soft_label_cache it is not built "
                        "(evaluate it with tools/eval.py)", stage, stage)
        elif report_teacher and trainer.start_epoch == 1:
            reports = report_frozen_models(config, trainer.model, trainer.eval_loader)
            main = reports.get(teacher_name(config["Arch"]) or "")  # an ensemble's own top-1 before its members'
            teacher_top1 = main["top1"] if main and "top1" in main else next(
                (r["top1"] for r in reports.values() if "top1" in r), None)
            if len(reports) > 1:
                teachers_top1 = {name: r.get("top1") for name, r in reports.items()}
        per_epoch = trainer._steps_per_epoch() * int(get(config, "DataLoader.Train.sampler.batch_size", 1))
        result = trainer.fit()
        curve = [{"epoch": r["epoch"], "images_seen": r["epoch"] * per_epoch, "top1": r["eval"].get("top1")}
                 for r in result["history"] if "eval" in r]
        out = {"top1": curve[-1]["top1"] if curve else result["best_metric"], "best_top1": result["best_metric"],
               "best_epoch": result["best_epoch"], "epochs": int(get(config, "Global.epochs")),
               "images_per_epoch": per_epoch, "images_seen": per_epoch * int(get(config, "Global.epochs")),
               "curve": curve, "best_model": os.path.join(folder, "best_model"), "config": self.cfg[stage]["config"],
               "config_used": config_file, "overrides": overrides, "arch": config["Arch"]["name"]}
        if teacher_top1 is not None:
            out["teacher_top1"] = teacher_top1
        if teachers_top1 is not None:
            out["teachers_top1"] = teachers_top1
        if cache is not None:
            out["soft_label_cache"] = cache
        note = warmup_note(stage, config, curve)
        if note:
            logger.info(note)
            out["note"] = note
        return out

    def _teacher(self) -> Dict[str, Any]:
        given = self.cfg["teacher"].get("pretrained")
        if given:
            return {"best_model": given, "top1": None, "given": True}
        return self._train("teacher", self._data_overrides("teacher"))

    def _baseline_overrides(self) -> List[str]:
        """The student's data; with ``baseline.match_budget`` (default) also ``Global.epochs`` chosen so the
        baseline sees as many images as the SSLD student (distillation epochs on labeled + mined images,
        plus the fine-tune's epochs on the labeled ones)."""
        items = self._data_overrides("student")
        if not self.cfg["baseline"].get("match_budget", True):
            return items
        labeled = int(self.results["data"]["counts"]["train_labeled"])
        budget = self._ssld_budget(labeled)
        epochs = max(1, int(round(budget / labeled)))
        logger.info("baseline: %d epochs on the %d labeled images (%d images) match the SSLD student's %d images",
                    epochs, labeled, epochs * labeled, budget)
        return items + [f"Global.epochs={epochs}"]

    def _ssld_budget(self, labeled: int) -> int:
        """Images the SSLD student sees: distillation epochs x (labeled + unlabeled used) + fine-tune epochs x labeled."""
        if "mine" in self.results:
            unlabeled = int(self.results["mine"]["selected"])
        else:
            unlabeled = int(self.results["data"]["counts"].get("unlabeled", 0))
        distill = load_config(self.cfg["distill"]["config"], self._overrides("distill", []))
        images = int(get(distill, "Global.epochs")) * (labeled + unlabeled)
        if self._enabled("finetune"):
            finetune = load_config(self.cfg["finetune"]["config"], self._overrides("finetune", []))
            images += int(get(finetune, "Global.epochs")) * labeled
        return images

    def _baseline(self) -> Dict[str, Any]:
        return self._train("baseline", self._baseline_overrides())

    def _teacher_override(self) -> str:
        return f"Arch.models.Teacher.pretrained={self.results['teacher']['best_model']}"

    def _mine(self) -> Dict[str, Any]:
        from ppssld.mining.mine import mine
        from ppssld.recipes.ssld.mining_report import mined_accuracy
        from ppssld.teacher.frozen import teacher_from_config

        mcfg = self.cfg.get("mine") or {}
        config = self._stage_config("distill", self._data_overrides("student") + [self._teacher_override()])
        paths = self.results["data"]["student"]
        teacher = teacher_from_config(config)
        pool = self._pool_sample(paths["unlabeled"], mcfg.get("pool"))
        report = mine(teacher, config, pool, paths["image_root"], paths["val"], int(mcfg.get("k", 1000)),
                      self.stage_dir("mine"), train_list=paths["train"] if mcfg.get("dedup_train") else None,
                      batch_size=int(mcfg.get("batch_size", 128)),
                      min_conf=float(mcfg.get("min_conf", 0.0)), cap=mcfg.get("cap"))
        result = {"selected_list": os.path.join(self.stage_dir("mine"), "selected_list.txt"),
                  "selected": report["selected"], "scored": report["scored"],
                  "removed_duplicates": report["dedup"]["removed"],
                  "report": os.path.join(self.stage_dir("mine"), "report.json")}
        names = self.results["data"].get("class_names") or [str(c) for c in range(report["class_num"])]
        accuracy = mined_accuracy(report, paths, int(mcfg.get("k", 1000)), self.stage_dir("mine"), names)
        if accuracy is not None:
            result["teacher_right"] = accuracy["accuracy"]
        return result

    def _pool_sample(self, pool: str, size: Optional[int]) -> str:
        """The whole pool, or a seeded random sample of ``size`` of its images (``mine.pool``)."""
        if not size:
            return pool
        from ppssld.mining.mine import sample_pool

        seed = int(self.cfg["data"].get("seed", 0))
        path = os.path.join(self.stage_dir("mine"), "pool_sample.txt")
        return sample_pool(pool, None, size, seed, path, size_name="mine.pool", seed_name="data.seed")[0]

    def _distill_unlabeled(self) -> str:
        return (self.results["mine"]["selected_list"] if "mine" in self.results
                else self.results["data"]["student"]["unlabeled"])

    def _distill(self) -> Dict[str, Any]:
        unlabeled = self._distill_unlabeled()
        return self._train("distill", self._data_overrides("student", unlabeled) + [self._teacher_override()],
                           report_teacher=self.results["teacher"].get("top1") is None)

    def _finetune_overrides(self) -> List[str]:
        return self._data_overrides("student") + [self._teacher_override(),
                                                  f"Global.pretrained_model={self.results['distill']['best_model']}"]

    def _finetune(self) -> Dict[str, Any]:
        return self._train("finetune", self._finetune_overrides())

    def _export(self) -> Dict[str, Any]:
        """Export the student, predict a few test images with the exported model (predicted vs true class),
        and measure the size and inference speed of teacher and student."""
        from ppssld.export.inference import export_model
        from ppssld.export.runtime import Predictor, predict_paths

        ecfg = self.cfg.get("export") or {}
        last = "finetune" if "finetune" in self.results else "distill"
        config = self._stage_config(last, self._data_overrides("student") + [self._teacher_override()])
        result = export_model(config, weights=self.results[last]["best_model"], save_dir=self.stage_dir("export"))
        shown = self._showcase_images(int(ecfg.get("showcase", 5)), ecfg.get("predict"))
        predictions = predict_paths(Predictor(result.model_dir), [path for path, _ in shown], top_k=3)
        names = self.results["data"].get("class_names") or []
        showcase = []
        for (path, truth), pred in zip(shown, predictions):
            row = {"image": path, "predicted": (pred.get("label_names") or ["?"])[0],
                   "predicted_id": (pred.get("class_ids") or [None])[0], "score": (pred.get("scores") or [None])[0]}
            if truth is not None:
                row.update(true_id=truth, true=names[truth] if truth < len(names) else str(truth))
            showcase.append(row)
            logger.info("showcase %s: predicted %s (%.2f), true %s", os.path.basename(path), row["predicted"],
                        row["score"] or 0.0, row.get("true", "unknown"))
        out = {"model_dir": result.model_dir, "pretrained": result.pretrained, "hub_dir": result.hub_dir,
               "predicted_image": shown[0][0], "prediction": predictions[0], "showcase": showcase}
        if ecfg.get("speed", True):
            from ppssld.recipes.ssld.speed import teacher_student_speed

            out["speed"] = teacher_student_speed(config)
        return out

    def _showcase_images(self, count: int, given: Optional[str]) -> List[Tuple[str, Optional[int]]]:
        """``export.predict`` (true class unknown) or the first ``count`` test images with their classes."""
        if given:
            return [(given, None)]
        from ppssld.data.lists.label_list import read_label_list

        paths = self.results["data"]["student"]
        records = read_label_list(paths["val"])[: max(1, count)]
        return [(os.path.join(paths["image_root"], r.path), int(r.label)) for r in records]


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    """A JSON file's content, or None when it does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def _params(path: str) -> str:
    """``path`` or, when only that exists, ``path.pdparams`` (weights may be named by prefix)."""
    return path if os.path.isfile(path) or not os.path.isfile(path + ".pdparams") else path + ".pdparams"
