"""What a soft-label cache was built from, and the check that a training config still matches it.

The manifest records the teacher (its architecture entry and its weights file's contents; for an
``Arch.ensemble`` each member's, with the ensemble's weights and temperature; for a teacher with its own
``input`` that input, resolved against the student normalisation it undoes), the training transform list, ``Global.seed``, the label lists' contents and the dataset's record order,
and the class count; with them the cache's own shape (views, top-K, dtypes, chunk size). Training
from a cache rebuilds these fields from its config and refuses any mismatch, naming the field.
"""
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from ppssld.arch.ensemble import ensemble_spec
from ppssld.arch.roles import aligned_list, model_entries, teacher_weights
from ppssld.arch.weights import resolve_params_path
from ppssld.utils.checks import is_int
from ppssld.utils.config import get, global_seed
from ppssld.data.lists.label_list import as_path_list
from ppssld.teacher.inputs import input_for
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.fingerprint import canonical, differences, digest, file_fingerprint

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "ppssld-soft-label-cache"
# 2: the ``values`` field (an exact cache stores logits; version 1 caches hold probabilities);
# 3: the ``chunks`` field, each chunk file's size and content hash (:mod:`ppssld.cache.integrity`)
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# the fields a training config must match, in the order they are reported
CHECKED = ("teacher_weights", "teacher_arch", "teacher_inputs", "transforms", "seed", "lists", "records",
           "class_num")
Member = Tuple[str, Dict[str, Any], Any]  # (model name, its Arch.models entry, its weights file)


def teacher_members(config: Dict[str, Any]) -> Tuple[str, List[Member]]:
    """``(teacher name, [(member name, entry, weights), ...])`` of a DistillationModel config: the one frozen
    teacher (a list of one), or ``Arch.ensemble``'s name and members.

    Raises:
        ConfigError: not a DistillationModel, not exactly one frozen model (or frozen models outside the
            ensemble), or a member without weights to cache from.
    """
    arch = config.get("Arch") or {}
    if arch.get("name") != "DistillationModel":
        raise ConfigError("a soft-label cache needs Arch.name: DistillationModel (a frozen teacher and a student)")
    entries = model_entries(arch)
    frozen = aligned_list(arch, "freeze_params_list", len(entries))
    teachers = [i for i, f in enumerate(frozen) if f]
    ensemble = ensemble_spec(arch)
    if ensemble is not None:
        outside = [entries[i][0] for i in teachers if entries[i][0] not in ensemble.members]
        if outside:
            raise ConfigError(f"a soft-label cache of Arch.ensemble {ensemble.name} stores the ensemble's output only; "
                              f"frozen model(s) {outside} are not among Arch.ensemble.members: add them or unfreeze "
                              f"them")
        teachers = [i for i, (key, _) in enumerate(entries) if key in ensemble.members]
    elif len(teachers) != 1:
        raise ConfigError(f"a soft-label cache needs exactly one frozen model (the teacher) in "
                          f"Arch.freeze_params_list, got {frozen!r}")
    members = []
    for i in teachers:
        name, entry = entries[i]
        weights = teacher_weights(arch, name)
        if not weights or weights is True:
            raise ConfigError(f"Arch.models[{i}].{name}.pretrained must name the teacher's local weights file: "
                              f"the cache records its fingerprint")
        members.append((name, entry, weights))
    return (ensemble.name if ensemble is not None else members[0][0]), members


def teacher_entry(config: Dict[str, Any]) -> Tuple[str, Dict[str, Any], Any]:
    """``(name, model entry, weights)`` of the frozen teacher of a DistillationModel config; for an ensemble its
    name with its first member's entry and weights (the members predict the same classes).

    Raises:
        ConfigError: as :func:`teacher_members`.
    """
    name, members = teacher_members(config)
    return name, members[0][1], members[0][2]


def class_count(entry: Dict[str, Any], config: Dict[str, Any]) -> int:
    """The teacher's class count (its ``class_num``, else ``Arch.class_num``, else 1000 as PaddleClas)."""
    value = entry.get("class_num", get(config, "Arch.class_num", 1000))
    if not is_int(value) or value < 1:
        raise ConfigError(f"the teacher's class_num must be a positive int, got {value!r}")
    return value


def expected_fields(config: Dict[str, Any], records: Optional[List[str]] = None) -> Dict[str, Any]:
    """The manifest fields a config implies (``records``: the training dataset's paths, in order)."""
    name, members = teacher_members(config)
    dataset = get(config, "DataLoader.Train.dataset") or {}
    prints = [file_fingerprint(resolve_params_path(str(w), f"{m}.pretrained")) for m, _e, w in members]
    archs = {m: {k: v for k, v in e.items() if k != "pretrained"} for m, e, _w in members}
    ensemble = ensemble_spec(config["Arch"])
    fields = {
        "teacher_name": name,
        "teacher_weights": prints[0] if ensemble is None else prints,
        "teacher_arch": archs[name] if ensemble is None else {"ensemble": ensemble.record(), "members": archs},
        "transforms": dataset.get("transform_ops"),
        "seed": global_seed(config),
        "lists": {role: [file_fingerprint(p) for p in as_path_list(dataset.get(key), f"DataLoader.Train.dataset.{key}")]
                  for role, key in (("labeled", "cls_label_path"), ("unlabeled", "unlabeled_label_path"))},
        "class_num": class_count(members[0][1], config),
    }
    inputs = {m: input_for(config, m, "train") for m, _e, _w in members}
    if any(value is not None for value in inputs.values()):  # absent without inputs: older manifests still match
        fields["teacher_inputs"] = {m: value.record() if value is not None else None for m, value in inputs.items()}
    if records is not None:
        fields["records"] = {"count": len(records), "digest": digest(records)}
    return fields


def read_manifest(root: str) -> Dict[str, Any]:
    """The manifest of cache folder ``root``.

    Raises:
        DataError: no manifest (not a cache, or generation never finished), or not ours.
    """
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        raise DataError(f"Global.soft_label_cache={root}: no {MANIFEST} there; generate the cache with "
                        f"tools/cache_soft_labels.py (a run that did not finish writes no manifest: re-run it to "
                        f"resume)")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            manifest = json.load(handle)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if manifest.get("format") != FORMAT or manifest.get("version") not in READABLE_VERSIONS:
        raise DataError(f"{path} is not a ppssld soft-label cache manifest (format {FORMAT}, version one of "
                        f"{READABLE_VERSIONS})")
    return {"values": "probs", **manifest}


def check_matches(manifest: Dict[str, Any], expected: Dict[str, Any], root: str) -> None:
    """Refuse a cache built from anything else than what the config trains with.

    Raises:
        ConfigError: naming each mismatching field (teacher weights, transforms, seed, lists, ...).
    """
    bad = [key for key in CHECKED if key in expected and canonical(manifest.get(key)) != canonical(expected[key])]
    if not bad:
        return
    lines = []
    for key in bad:
        detail = "; ".join(differences({key: manifest.get(key)}, {key: expected[key]}, limit=2))
        lines.append(f"{key} ({detail})")
    raise ConfigError(f"Global.soft_label_cache={root} is stale: it was built with other "
                      f"{', '.join(bad)} than this config: {' | '.join(lines)} (cache -> config). Regenerate it "
                      f"with tools/cache_soft_labels.py -c <this config> or point Global.soft_label_cache elsewhere")
