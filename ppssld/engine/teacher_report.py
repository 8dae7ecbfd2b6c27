"""The frozen teacher's accuracy, measured once per (weights, architecture, eval data, metric) and reused.

A frozen model's top-1/top-5 on the eval set depends only on its weights file's contents, its
``Arch.models`` entry, the eval lists' contents and transforms, the metric and the parameters' dtype,
so it is kept in a small JSON record named by the digest of exactly those fields:
``$XDG_CACHE_HOME/ppssld/teacher_eval/<digest>.json`` (``~/.cache`` when ``XDG_CACHE_HOME`` is unset or
not absolute, as the XDG spec says). A per-user cache folder rather than a file under
``Global.output_dir``: the same teacher is reused across runs of one output folder AND across output
folders (every pipeline run, every student, every ``-o Global.output_dir=...``), which a file inside
the output folder would miss. Records are written atomically, by rank 0 only; one that does not read
back (corrupt, another format) is ignored with a warning and rewritten.

Weights are identified by content (:func:`ppssld.utils.fingerprint.file_fingerprint`): the entry's
``pretrained`` (or ``Arch.pretrained_list``) file and, when set, the whole-model
``Global.checkpoints`` / ``Global.pretrained_model`` that may provide ``<Teacher>.*`` in its place
(both are fingerprinted, so a change to either re-evaluates). When no weights file can be
identified, the teacher is evaluated and nothing is reused. Like the soft-label cache's manifest,
the eval images are covered by the lists that name them (``image_root`` is not part of the key).
``Global.eval_teacher: false`` skips the evaluation altogether.

A teacher with its own ``input`` (:mod:`ppssld.teacher.inputs`) is evaluated on the eval views prepared for it,
as training feeds it; with ``Arch.ensemble`` each member is evaluated, then the ensemble (the argmax of its mean
probability), its record keyed by every member's fields plus the ensemble's weights and temperature.
"""
import datetime
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import paddle

from ppssld.arch.distillation import FrozenView
from ppssld.arch.ensemble import ensemble_spec
from ppssld.arch.weights import resolve_params_path
from ppssld.utils.config import get
from ppssld.data.lists.label_list import as_path_list
from ppssld.engine import distributed, evaluator
from ppssld.utils.errors import OutputError, PpssldError
from ppssld.utils.fingerprint import digest, file_fingerprint
from ppssld.utils.io import atomic_write_json, cache_root

logger = logging.getLogger(__name__)

FORMAT = "ppssld-teacher-eval"
VERSION = 1
METRIC = [{"TopkAcc": {"topk": [1, 5]}}]  # what a frozen model is scored with


def cache_dir() -> str:
    """``<ppssld cache>/teacher_eval`` (:func:`ppssld.utils.io.cache_root`: ``~/.cache/ppssld`` by default)."""
    return os.path.join(cache_root(), "teacher_eval")


def _model_entry(config: Dict[str, Any], name: str) -> Tuple[Dict[str, Any], Any]:
    """``(entry without pretrained, its pretrained file or None)`` of model ``name`` of ``Arch.models``."""
    arch = config.get("Arch") or {}
    models = [m for m in arch.get("models") or [] if isinstance(m, dict) and len(m) == 1]
    listed = arch.get("pretrained_list") or [None] * len(models)
    for i, item in enumerate(models):
        (key, entry), = item.items()
        if key == name and isinstance(entry, dict):
            own = entry.get("pretrained") or (listed[i] if i < len(listed) else None)
            return {k: v for k, v in entry.items() if k != "pretrained"}, own
    return {}, None


def weight_sources(config: Dict[str, Any], name: str) -> Tuple[Optional[List[Dict[str, Any]]], str]:
    """Fingerprints of every file frozen model ``name``'s weights may come from, or ``(None, why not)``.

    The entry's own ``pretrained`` file, plus the whole-model file the builder loads over it
    (``Global.checkpoints``, else ``Global.pretrained_model``), each named by role.
    """
    _, own = _model_entry(config, name)
    whole_key = "Global.checkpoints" if get(config, "Global.checkpoints") else "Global.pretrained_model"
    candidates = [(f"{name}.pretrained", own), (whole_key, get(config, whole_key))]
    sources = []
    for role, path in candidates:
        if not path or path is True:
            continue
        try:
            real = resolve_params_path(str(path), role)
        except PpssldError as exc:
            return None, f"{role} cannot be fingerprinted ({exc})"
        sources.append({"role": role, **file_fingerprint(real)})
    if not sources:
        return None, f"no weights file names {name}'s weights ({name}.pretrained and {whole_key} are unset)"
    return sources, ""


def eval_data_fields(config: Dict[str, Any]) -> Dict[str, Any]:
    """The eval data's identity: its lists' contents, its transforms and the dataset's other settings."""
    dataset = dict(get(config, "DataLoader.Eval.dataset") or {})
    lists = as_path_list(dataset.pop("cls_label_path", None), "DataLoader.Eval.dataset.cls_label_path")
    transforms = dataset.pop("transform_ops", None)
    dataset.pop("image_root", None)
    return {"lists": [file_fingerprint(p) for p in lists], "transforms": transforms, "dataset": dataset,
            "drop_last": get(config, "DataLoader.Eval.sampler.drop_last", False)}


def record_fields(config: Dict[str, Any], name: str, layer: paddle.nn.Layer) -> Tuple[Optional[Dict[str, Any]], str]:
    """Everything frozen model ``name``'s accuracy depends on, or ``(None, why it cannot be keyed)``; for the
    ensemble, its members' fields and its weights and temperature."""
    ensemble = ensemble_spec(config.get("Arch") or {})
    if ensemble is not None and name == ensemble.name:
        members = []
        for member in ensemble.members:
            fields, why = record_fields(config, member, getattr(layer, member))
            if fields is None:
                return None, why
            members.append(fields)
        return {"model": name, "ensemble": ensemble.record(), "members": members}, ""
    sources, why = weight_sources(config, name)
    if sources is None:
        return None, why
    entry, _ = _model_entry(config, name)
    params = list(layer.parameters())
    fields = {"model": name, "weights": sources, "arch": entry, "eval_data": eval_data_fields(config),
              "metric": METRIC, "dtype": str(params[0].dtype) if params else None}
    if not get(config, "Global.strict_load", True):  # missing tensors keep their seeded initialisation
        fields["seed"] = int(get(config, "Global.seed", 42))
    return fields, ""


def read_record(path: str, fields: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The stored record at ``path`` if it is ours and matches ``fields``; None (warned if corrupt) else."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as handle:
            record = json.load(handle)
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} record")
        if not isinstance(record.get("results"), dict) or not isinstance(record["results"].get("top1"), float):
            raise ValueError("no results.top1")
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        logger.warning("ignoring the unreadable teacher evaluation record %s (%s): evaluating again and "
                       "rewriting it", path, exc)
        return None
    if json.loads(json.dumps(fields, default=str)) != record.get("fields"):
        return None  # a digest collision or a hand-edited file: never reuse on a guess
    return record


def store_record(path: str, fields: Dict[str, Any], results: Dict[str, float]) -> None:
    """Write the record atomically (rank 0 only); a cache folder that cannot be written is a warning."""
    if not distributed.is_main():
        return
    plain = {k: int(v) if k == "samples" else float(v) for k, v in results.items()}  # numpy scalars -> JSON
    record = {"format": FORMAT, "version": VERSION, "fields": json.loads(json.dumps(fields, default=str)),
              "results": plain, "measured": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        atomic_write_json(path, record)
    except OutputError as exc:
        logger.warning("the teacher's evaluation is not kept for the next run: %s", exc)
        return
    logger.info("frozen model %s: evaluation stored in %s", fields["model"], path)


def _all_ranks_hit(hit: bool) -> bool:
    """Reuse only when every rank found the record (a rank that evaluates alone would wait forever)."""
    hits = distributed.all_reduce_sum(np.array([float(hit)]))
    return round(float(hits[0])) == distributed.world_size()


def report_one(config: Dict[str, Any], name: str, layer: paddle.nn.Layer, loader: Any) -> Dict[str, float]:
    """Frozen model ``name``'s top-1/top-5: reused from its record when one matches, else evaluated and stored."""
    from ppssld.metric import build_metrics

    fields, why = record_fields(config, name, layer)
    path = os.path.join(cache_dir(), digest(fields) + ".json") if fields is not None else None
    record = read_record(path, fields) if path else None
    if _all_ranks_hit(record is not None):
        logger.info("frozen model %s: top-1 %.5f (reused from %s, measured %s)", name,
                    record["results"]["top1"], path, record.get("measured", "at an unknown date"))
        return dict(record["results"])
    if fields is None:
        logger.info("frozen model %s: evaluated, not reused: %s", name, why)
    logger.info("evaluating frozen model %s once before training", name)
    metrics = build_metrics(METRIC, f"frozen model {name}")
    results = evaluator.evaluate(layer, loader, metrics, epoch=0)
    if path:
        store_record(path, fields, results)
    return results


def report_frozen_models(config: Dict[str, Any], model: paddle.nn.Layer, loader: Any) -> Dict[str, Dict[str, float]]:
    """Log the top-1/top-5 of each frozen model (the teacher) once, before training.

    Args:
        config: the training config (read only): ``Global.eval_teacher``, weights and eval data.
        model: a DistillationModel (anything else is skipped).
        loader: the eval DataLoader (None: skipped).
    Returns:
        model name -> results (empty when skipped).
    """
    reports: Dict[str, Dict[str, float]] = {}
    if loader is None or not getattr(model, "frozen", None):
        return reports
    if not get(config, "Global.eval_teacher", True):
        logger.info("frozen models %s are not evaluated (Global.eval_teacher: false)", ", ".join(model.frozen))
        return reports
    for name in model.frozen:
        layer = getattr(model, name)
        if getattr(layer, "is_soft_label_cache", False):  # no network to evaluate: its outputs were cached
            logger.info("frozen model %s comes from a soft-label cache: not evaluated", name)
            continue
        if name in (getattr(model, "member_inputs", None) or {}):  # evaluated on the views prepared for it
            layer = FrozenView(model, name)
        reports[name] = report_one(config, name, layer, loader)
    ensemble = getattr(model, "ensemble", None)
    if ensemble is not None:
        reports[ensemble.name] = report_one(config, ensemble.name, FrozenView(model, ensemble.name), loader)
        logger.info("teacher ensemble %s: top-1 %.5f; its members: %s", ensemble.name,
                    reports[ensemble.name].get("top1", float("nan")),
                    ", ".join(f"{m} {reports[m].get('top1', float('nan')):.5f}" for m in ensemble.members))
    return reports
