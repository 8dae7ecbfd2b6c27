"""Intermediate outputs of zoo backbones (``return_patterns``), PaddleClas's TheseusLayer mechanism.

With ``return_patterns: ["blocks[7]", "avg_pool"]`` a backbone returns a dict
``{"logits": ..., "blocks[7]": ..., "avg_pool": ...}``: each pattern is a sublayer path
(attribute names, ``[i]`` indices, ``.`` between levels) and its output is stored under the
pattern itself, exactly as PaddleClas's ``TheseusLayer.update_res`` does (ppssld calls it).
Losses pick those outputs by ``key`` / ``s_key`` / ``t_key``. A model built for inference
alone (export, mining) gets no patterns, so it returns logits only.
"""
import logging
from typing import Any, Dict, List

import paddle.nn as nn

from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

AUX_KEYS = ("return_patterns",)


def pop_return_patterns(kwargs: Dict[str, Any], where: str) -> Any:
    """Take ``return_patterns`` (and PaddleClas's ``return_stages``) out of a backbone's arguments.

    ``return_stages`` alone is refused (ppssld needs the output names); beside ``return_patterns``
    it is ignored with a warning (PaddleClas would return every stage instead; the losses read the
    patterns either way).
    """
    patterns = kwargs.pop("return_patterns", None)
    stages = kwargs.pop("return_stages", None)
    if stages not in (None, False):
        if patterns is None:
            raise ConfigError(f"{where}.return_stages is not supported: name the outputs with return_patterns, "
                              f"e.g. ['blocks[7]'] (ResNet) or ['blocks5'] (PPLCNet)")
        logger.warning("%s.return_stages=%r is ignored: return_patterns %s are returned (PaddleClas would return "
                       "every stage; the patterns are among them)", where, stages, patterns)
    return patterns


def check_patterns(patterns: Any, where: str) -> List[str]:
    """Validate a ``return_patterns`` value (a non-empty list of strings)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(f"{where}.return_patterns must be a list of sublayer paths like "
                          f"['blocks[7]', 'avg_pool'], got {patterns!r}")
    if "logits" in patterns:
        raise ConfigError(f"{where}.return_patterns: 'logits' is the classifier output's own key; remove it")
    return list(patterns)


def apply_return_patterns(layer: nn.Layer, backbone: str, patterns: Any, where: str) -> nn.Layer:
    """Make ``layer`` return ``{"logits": ..., <pattern>: ...}`` (in place).

    Raises:
        ConfigError: the backbone is not a TheseusLayer, or a pattern names no sublayer.
    """
    patterns = check_patterns(patterns, where)
    if not callable(getattr(layer, "update_res", None)):
        raise ConfigError(f"{where}: backbone {backbone!r} cannot return intermediate outputs "
                          f"(return_patterns needs a PaddleClas TheseusLayer backbone, e.g. ResNet18, "
                          f"PPLCNet_x1_0, MobileNetV3_small_x1_0); remove return_patterns")
    try:
        hit = layer.update_res(patterns)
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"{where}.return_patterns {patterns}: {exc}") from exc
    missing = [p for p in patterns if p not in (hit or [])]
    if missing:
        top = [name for name, _ in layer.named_children()]
        raise ConfigError(f"{where}.return_patterns: {missing} name no sublayer of {backbone}; its top-level "
                          f"sublayers are {top} (index them like 'blocks[3]', nest with '.')")
    logger.debug("%s: %s returns logits and %s", where, backbone, patterns)
    return layer


def logits_only(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a backbone config without the keys that add auxiliary outputs."""
    return {k: v for k, v in cfg.items() if k not in AUX_KEYS}
