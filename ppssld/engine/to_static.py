"""``Global.to_static`` (PaddleClas's key): the trained model's forward through ``paddle.jit.to_static``.

Only what trains is converted: the student(s) of a DistillationModel (each model not frozen), or the
plain model; a frozen teacher keeps its own forward (``no_grad`` dygraph or an inference engine,
:mod:`ppssld.teacher`). Parameters, their names and so the checkpoints are the same objects as in
dygraph; the first training and evaluation batches pay the conversion (seconds). Default off, as in
PaddleClas (the measured gain is small on this project's CPU: ``docs/teacher_engine.md``).
"""
import logging
from typing import Any, Dict, List

import paddle
import paddle.nn as nn

from ppssld.utils.config import get
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)


def wants_to_static(config: Dict[str, Any]) -> bool:
    """``Global.to_static`` as a bool (absent: False); anything but true/false is refused."""
    value = get(config, "Global.to_static", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"Global.to_static must be true or false, got {value!r}")
    return value


def convert_trained_models(model: nn.Layer, config: Dict[str, Any]) -> List[str]:
    """Run the trained part of ``model`` through ``paddle.jit.to_static`` when ``Global.to_static`` asks;
    returns the names converted (``[]`` when off)."""
    if not wants_to_static(config):
        return []
    frozen = set(getattr(model, "frozen", None) or [])
    names = getattr(model, "names", None)
    if names is None:  # a plain backbone
        paddle.jit.to_static(model, full_graph=False)
        converted = [type(model).__name__]
    else:
        converted = [name for name in names if name not in frozen]
        for name in converted:
            paddle.jit.to_static(getattr(model, name), full_graph=False)
    logger.info("Global.to_static: %s run(s) through paddle.jit.to_static (converted at the first batch)",
                ", ".join(converted))
    return converted
