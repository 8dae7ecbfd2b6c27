"""Per-stage learning-rate multipliers for zoo backbones that accept ``lr_mult_list`` but drop it.

PaddleClas's ResNet*, PPLCNet* and PPHGNetV2* turn ``lr_mult_list`` into ``ParamAttr``
learning rates themselves; others (MobileNetV3*, among them the SSLD paper's student) swallow
the argument. For a model whose module declares its stages (``MODEL_STAGES_PATTERN``, the
patterns PaddleClas uses for ``return_stages``) ppssld applies the same convention itself:

- ``lr_mult_list[0]``: the stem, every parameter before the first stage;
- ``lr_mult_list[i]``: stage ``i``, which ends at the ``i``-th stage pattern (inclusive);
- parameters after the last stage (the head: last convolutions and classifier) keep 1.0,
  as in PaddleClas's ResNet.

The multiplier is stored where Paddle's optimizers read it, ``param.optimize_attr['learning_rate']``.
"""
import inspect
import logging
import re
from typing import Any, Dict, List, Optional

import paddle.nn as nn

from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)


def stage_patterns(factory: Any, name: str) -> Optional[List[str]]:
    """The stage patterns of backbone ``name`` (e.g. ``["blocks[0]", "blocks[2]"]``), or None if undeclared.

    Args:
        factory: the zoo factory function of ``name``.
        name: the zoo name; the longest key of ``MODEL_STAGES_PATTERN`` that prefixes it is used.
    Returns:
        The patterns, or None when the module declares none for this name.
    """
    table = getattr(inspect.getmodule(factory), "MODEL_STAGES_PATTERN", None)
    if not isinstance(table, dict):
        return None
    keys = sorted((k for k in table if name.startswith(k)), key=len, reverse=True)
    return list(table[keys[0]]) if keys else None


def _prefix(pattern: str) -> str:
    """``"blocks[7]"`` -> ``"blocks.7."`` (a parameter-name prefix)."""
    return re.sub(r"\[(\d+)\]", r".\1", pattern) + "."


def stage_of_parameters(layer: nn.Layer, patterns: List[str]) -> Dict[str, int]:
    """Map each parameter name to its stage: 0 = stem, i = stage ending at pattern i-1, -1 = head.

    Args:
        layer: the built backbone.
        patterns: its stage patterns, in forward order.
    Returns:
        parameter name -> stage index.
    Raises:
        ConfigError: a pattern names no parameter (the table does not describe this model).
    """
    prefixes = [_prefix(p) for p in patterns]
    stages: Dict[str, int] = {}
    current = -1  # index of the last pattern whose parameters were seen
    for pname, _ in layer.named_parameters():
        owner = next((j for j, pre in enumerate(prefixes) if pname.startswith(pre)), None)
        if owner is not None:
            current = owner
            stages[pname] = owner + 1
        elif current == -1:
            stages[pname] = 0
        elif current == len(prefixes) - 1:
            stages[pname] = -1
        else:
            stages[pname] = current + 2
    missing = [p for j, p in enumerate(patterns) if j + 1 not in stages.values()]
    if missing:
        raise ConfigError(f"stage patterns {missing} name no parameter of {type(layer).__name__}")
    return stages


def apply_lr_mult_list(layer: nn.Layer, name: str, factory: Any, mults: List[float], where: str) -> None:
    """Set per-stage multipliers on a backbone that ignored ``lr_mult_list``.

    Args:
        layer: the built backbone (its parameters all at multiplier 1.0).
        name: zoo name, for messages and the stage table.
        factory: its zoo factory (its module holds ``MODEL_STAGES_PATTERN``).
        mults: one multiplier for the stem and one per stage.
        where: config location for error messages.
    Raises:
        ConfigError: the model declares no stages, or ``mults`` has the wrong length.
    """
    patterns = stage_patterns(factory, name)
    if not patterns:
        raise ConfigError(f"backbone {name!r} at {where} ignores lr_mult_list {mults} and declares no stages "
                          f"to apply it by (paddleclas applies it for e.g. ResNet*, PPLCNet*; ppssld for models "
                          f"with MODEL_STAGES_PATTERN such as MobileNetV3*). Remove lr_mult_list or pick such a "
                          f"backbone")
    if len(mults) != len(patterns) + 1:
        raise ConfigError(f"{where}.lr_mult_list has {len(mults)} values; {name} needs {len(patterns) + 1}: "
                          f"one for the stem and one per stage (stages end at {patterns})")
    stages = stage_of_parameters(layer, patterns)
    for pname, param in layer.named_parameters():
        stage = stages[pname]
        param.optimize_attr["learning_rate"] = 1.0 if stage < 0 else float(mults[stage])
    logger.info("%s: lr_mult_list %s applied by ppssld per stage (stem, then stages ending at %s; head at 1.0)",
                name, mults, patterns)
