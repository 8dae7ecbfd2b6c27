"""Optimizer states keyed as PaddleClas keys them, and loaded whatever names this process generates.

Paddle keys an accumulator ``<parameter name>_<accumulator>_<n>`` (``conv2d_0.w_0_velocity_0``):
the parameter's generated name plus a process-wide counter ``n``. ppssld builds every model
in a fresh name scope, so parameter names are those of a fresh PaddleClas process; on save
the counter is written as ``0`` (what a fresh PaddleClas process generates), and on load each
key is matched to its parameter and renamed to the name this optimizer will look up.
Checkpoints of earlier ppssld versions, keyed by structured names (``Student.conv.weight``),
load too.
"""
import logging
import re
from typing import Any, Dict, List, Optional

import paddle
from paddle.base import unique_name

from ppssld.utils.errors import WeightsError

logger = logging.getLogger(__name__)

_COUNTER = re.compile(r"_\d+$")
_GENERATED = re.compile(r"^(?P<kind>[A-Za-z][A-Za-z0-9_]*?)_(?P<n>\d+)\.(?P<attr>[a-z]+_\d+)_(?P<acc>.+)_\d+$")
_SPECIAL = ("LR_Scheduler", "master_weights")


def _owner(key: str, ordered: List[str]) -> Optional[str]:
    return next((name for name in ordered if key.startswith(name + "_")), None)


def _accumulator(key: str, owner: str) -> str:
    return _COUNTER.sub("", key[len(owner) + 1:])


def state_for_save(optimizer: Any, model: paddle.nn.Layer) -> Dict[str, Any]:
    """``optimizer.state_dict()`` with keys ``<param name>_<accumulator>_0``, as PaddleClas writes them."""
    ordered = sorted({p.name for p in model.parameters()}, key=len, reverse=True)
    saved: Dict[str, Any] = {}
    for key, value in optimizer.state_dict().items():
        owner = None if key in _SPECIAL else _owner(key, ordered)
        saved[f"{owner}_{_accumulator(key, owner)}_0" if owner else key] = value
    return saved


def _by_rank(keys: List[str], params: List[Any]) -> Dict[str, Any]:
    """Match generated-name keys to parameters whose counters are offset (another name scope).

    Within one layer kind (``conv2d``, ``batch_norm`` ...) a model's counters increase in
    construction order, whatever they start from; the i-th counter of a kind in the file is
    therefore the i-th among the trainable parameters of the same kind here.
    """
    ours: Dict[tuple, Any] = {}
    for param in params:
        parts = re.match(r"^(?P<kind>[A-Za-z][A-Za-z0-9_]*?)_(?P<n>\d+)\.(?P<attr>[a-z]+_\d+)$", param.name)
        if parts:
            ours[(parts["kind"], int(parts["n"]), parts["attr"])] = param
    theirs = {key: _GENERATED.match(key) for key in keys}
    matched: Dict[str, Any] = {}
    for kind in {m["kind"] for m in theirs.values() if m}:
        file_ids = sorted({int(m["n"]) for m in theirs.values() if m and m["kind"] == kind})
        own_ids = sorted({n for (k, n, _) in ours if k == kind})
        if len(file_ids) != len(own_ids):
            continue
        rank = dict(zip(file_ids, own_ids))
        for key, m in theirs.items():
            if m and m["kind"] == kind and (kind, rank[int(m["n"])], m["attr"]) in ours:
                matched[key] = ours[(kind, rank[int(m["n"])], m["attr"])]
    return matched


def _target_name(optimizer: Any, param: Any, accumulator: str) -> str:
    """The name this optimizer gives (or gave) ``param``'s ``accumulator``."""
    existing = getattr(optimizer, "_accumulators", {}).get(accumulator, {}).get(param.name)
    if existing is not None:
        return existing.name
    base = f"{param.name}_{accumulator}"
    return f"{base}_{unique_name.generator.ids.get(base, 0)}"


def _shape(value: Any) -> List[int]:
    return [int(d) for d in value.shape]


def restore(optimizer: Any, model: paddle.nn.Layer, state: Dict[str, Any], where: str) -> None:
    """Load ``state`` (written by PaddleClas or ppssld, any version) into ``optimizer``.

    Raises:
        WeightsError: a key that belongs to no parameter of ``model``, an accumulator whose
            shape differs from its parameter's, or no ``LR_Scheduler`` state for a scheduled
            learning rate; the message names them.
    """
    lookup = {name: p for name, p in model.named_parameters()}
    lookup.update({p.name: p for p in model.parameters()})
    structured = {id(p): name for name, p in model.named_parameters()}
    ordered = sorted(lookup, key=len, reverse=True)
    renamed: Dict[str, Any] = {}
    unknown, bad_shape, covered = [], [], set()
    keys = [k for k in state if k not in _SPECIAL]
    if any(_owner(k, ordered) is None for k in keys):
        trainable = [p for p in model.parameters() if not p.stop_gradient]
        offset = _by_rank(keys, trainable)
        logger.info("optimizer state %s: parameter names differ from this process's; matched %d of %d keys "
                    "by layer order", where, len(offset), len(keys))
    else:
        offset = {}
    for key, value in state.items():
        if key == "LR_Scheduler":
            renamed[key] = value
            continue
        if key == "master_weights":
            renamed[key] = {lookup[k].name if k in lookup else k: v for k, v in value.items()}
            continue
        owner = _owner(key, ordered)
        if key in offset:  # once names are offset, no name match can be trusted
            param, accumulator = offset[key], _GENERATED.match(key)["acc"]
        elif owner is None:
            unknown.append(key)
            continue
        else:
            param, accumulator = lookup[owner], _accumulator(key, owner)
        if _shape(value) not in (_shape(param), [1]):
            bad_shape.append(f"{key} {_shape(value)} vs {structured[id(param)]} {_shape(param)}")
        covered.add(id(param))
        renamed[_target_name(optimizer, param, accumulator)] = value
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    missing = [structured[id(p)] for p in trainable if id(p) not in covered] if covered else []
    if missing:  # parameters that never had a gradient have no accumulator in Paddle either
        logger.warning("optimizer state %s: %d trainable parameters have no state (e.g. %s); they start from zero",
                       where, len(missing), ", ".join(missing[:3]))
    problems = ([f"{len(unknown)} keys match no parameter (e.g. {', '.join(unknown[:3])})"] if unknown else []) + \
               ([f"shape {', '.join(bad_shape[:3])}"] if bad_shape else [])
    if isinstance(optimizer._learning_rate, paddle.optimizer.lr.LRScheduler) and "LR_Scheduler" not in state:
        problems.append("no LR_Scheduler state although the learning rate is scheduled")
    if problems:
        raise WeightsError(f"optimizer state {where} does not fit this model and optimizer: "
                           f"{'; '.join(problems)}. It was saved for another Arch or Optimizer; resume "
                           f"with the config it was trained with, or start from its weights with "
                           f"Global.pretrained_model instead of Global.checkpoints")
    optimizer.set_state_dict(renamed)
