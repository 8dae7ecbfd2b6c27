"""The per-stage transform lists of progressive training (``Global.train_mode: progressive``).

A ``transform_ops`` list carries the stages in two keys: ``RandCropImage.progress_size`` (the training
image size of each stage) and ``RandAugmentV2.progress_magnitude`` (the RandAugment magnitude of each
stage). :func:`stage_ops` gives stage ``k``'s list: a copy with ``size`` / ``magnitude`` set to entry ``k``.
Ops are found by name wherever they stand (PaddleClas reads fixed positions 1 and 3). No paddle import.
"""
import copy
import logging
from typing import Any, Dict, List, Optional, Tuple

from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

# op name -> (the key listing one value per stage, the key the stage's value is written to)
PROGRESS_KEYS: Dict[str, Tuple[str, str]] = {"RandCropImage": ("progress_size", "size"),
                                              "RandAugmentV2": ("progress_magnitude", "magnitude")}
PROGRESS_KEYS_BY_TARGET = {target: f"{name}.{key}" for name, (key, target) in PROGRESS_KEYS.items()}


def _entries(ops: Any) -> List[Tuple[int, str, Dict[str, Any]]]:
    """``(index, op name, params)`` of each ``{name: params}`` item (other items are skipped)."""
    found = []
    for index, item in enumerate(ops if isinstance(ops, list) else []):
        if isinstance(item, dict) and len(item) == 1:
            (name, params), = item.items()
            found.append((index, str(name), params if isinstance(params, dict) else {}))
    return found


def progress_lists(ops: Any, where: str = "transform_ops") -> Dict[str, Tuple[int, List[Any]]]:
    """The progress lists of ``ops``: ``{"size": (op index, list), "magnitude": (op index, list)}``.

    Only the keys present are returned.

    Raises:
        ConfigError: a progress list that is not a non-empty list, or two ops carrying the same kind.
    """
    found: Dict[str, Tuple[int, List[Any]]] = {}
    for index, name, params in _entries(ops):
        if name not in PROGRESS_KEYS or params.get(PROGRESS_KEYS[name][0]) is None:
            continue
        progress_key, target = PROGRESS_KEYS[name]
        values = params[progress_key]
        at = f"{where}[{index}].{name}.{progress_key}"
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{at} must be a non-empty list (one {target} per training stage), got {values!r}")
        if target in found:
            raise ConfigError(f"{at}: {where}[{found[target][0]}] already lists a {target} per stage; "
                              f"keep {progress_key} on one {name}")
        found[target] = (index, list(values))
    return found


def stage_count(ops: Any, where: str = "transform_ops") -> Optional[int]:
    """How many stages the progress lists of ``ops`` describe (None: no progress list).

    Raises:
        ConfigError: the lists disagree on the number of stages.
    """
    lists = progress_lists(ops, where)
    counts = {target: len(values) for target, (_, values) in lists.items()}
    if len(set(counts.values())) > 1:
        raise ConfigError(f"{where}: every progress list needs one entry per stage, but "
                          + " and ".join(f"{PROGRESS_KEYS_BY_TARGET[t]} has {n}" for t, n in sorted(counts.items())))
    return next(iter(counts.values()), None)



def stage_ops(ops: List[Any], stage: int) -> List[Any]:
    """A copy of ``ops`` with each progress op's ``size`` / ``magnitude`` set to entry ``stage`` (0-based).

    ``ops`` itself is not changed.
    """
    out = copy.deepcopy(ops)
    for index, name, params in _entries(out):
        if name in PROGRESS_KEYS and params.get(PROGRESS_KEYS[name][0]) is not None:
            progress_key, target = PROGRESS_KEYS[name]
            params[target] = copy.deepcopy(params[progress_key][stage])
            out[index] = {name: params}
    return out


def stage_values(ops: Any, stage: int) -> Dict[str, Any]:
    """``{"size": ..., "magnitude": ...}`` of stage ``stage`` (the kinds ``ops`` lists)."""
    return {target: values[stage] for target, (_, values) in progress_lists(ops).items()}
