"""Which model plays which role: the student's output in a dict of outputs, and the infer model.

One rule each, used by the losses, the metrics, the model builder, ``DistillationModel`` and export:

* **The student's output** (:func:`student_output_name`): in a dict of model outputs, the entry
  ``logits`` (a backbone with ``return_patterns``), else ``Student`` (PaddleClas's name for the
  trained model of a ``DistillationModel``), else the only entry; with several other entries there
  is no answer (None) and the caller asks for ``model_names`` / ``model_key``.
* **The infer model** (:func:`infer_model`): the model evaluation and export use: ``infer_model_name``
  when given, else the last model not frozen (PaddleClas's convention: the student follows the
  teacher in ``models``), else, when every model is frozen, the last model.
* **The teacher** (:func:`teacher_name`): the ensemble of ``Arch.ensemble`` (its ``name``, default
  ``Teacher``; :mod:`ppssld.arch.ensemble`), else the one frozen model of a ``DistillationModel``
  (``freeze_params_list``), else (nothing or several frozen, e.g. PaddleClas's DML configs) the
  model named ``Teacher``; :func:`teacher_weights` is where its weights come from (its
  ``pretrained``, else ``pretrained_list``).

``model_entries`` and ``aligned_list`` read ``Arch.models`` and the per-model lists beside it.
"""
from typing import Any, Dict, List, Optional, Sequence

from ppssld.utils.errors import ConfigError

STUDENT = "Student"
TEACHER = "Teacher"
LOGITS = "logits"


def student_output_name(outputs: Dict[str, Any]) -> Optional[str]:
    """The key of the student's entry in ``outputs`` (see the module docstring), or None."""
    for candidate in (LOGITS, STUDENT):
        if candidate in outputs:
            return candidate
    if len(outputs) == 1:
        return next(iter(outputs))
    return None


def infer_model(names: Sequence[str], frozen: Sequence[bool], requested: Optional[str] = None) -> str:
    """The infer model among ``names`` (``frozen[i]``: whether ``names[i]`` is frozen)."""
    if requested:
        return requested
    trainable = [name for name, is_frozen in zip(names, frozen) if not is_frozen]
    return trainable[-1] if trainable else names[-1]


def model_entries(arch: Dict[str, Any]) -> List[tuple]:
    """``[(name, entry), ...]`` of ``Arch.models``, checked (one-key mappings, unique names); entries copied."""
    models = arch.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError("Arch.models must be a non-empty list like [{Teacher: {...}}, {Student: {...}}]")
    entries = []
    for i, item in enumerate(models):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"Arch.models[{i}] must be a one-key mapping {{Name: {{name: Backbone, ...}}}}")
        (key, cfg), = item.items()
        if not isinstance(cfg, dict):
            raise ConfigError(f"Arch.models[{i}].{key} must be a mapping with at least 'name'")
        entries.append((key, dict(cfg)))
    names = [k for k, _ in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"Arch.models names must be unique, got {names}")
    return entries


def aligned_list(arch: Dict[str, Any], key: str, count: int) -> List[Any]:
    """``Arch.<key>`` as one entry per model (``[None] * count`` when absent)."""
    value = arch.get(key)
    if value is None:
        return [None] * count
    if not isinstance(value, list) or len(value) != count:
        raise ConfigError(f"Arch.{key} must be a list with one entry per model ({count}), got {value!r}")
    return value


def teacher_name(arch: Dict[str, Any]) -> Optional[str]:
    """The teacher of a DistillationModel ``arch`` (module docstring), or None when no rule names one."""
    ensemble = arch.get("ensemble")
    if isinstance(ensemble, dict):
        return ensemble.get("name", TEACHER)
    entries = model_entries(arch)
    frozen = aligned_list(arch, "freeze_params_list", len(entries))
    chosen = [name for (name, _), is_frozen in zip(entries, frozen) if is_frozen]
    if len(chosen) == 1:
        return chosen[0]
    return TEACHER if TEACHER in [name for name, _ in entries] else None


def teacher_weights(arch: Dict[str, Any], name: str) -> Any:
    """The weights model ``name`` loads: its ``pretrained``, else its ``pretrained_list`` entry (may be None)."""
    entries = model_entries(arch)
    listed = aligned_list(arch, "pretrained_list", len(entries))
    for (key, entry), from_list in zip(entries, listed):
        if key == name:
            return entry.get("pretrained") or from_list
    raise ConfigError(f"Arch.models has no model {name!r}; models: {[key for key, _ in entries]}")
