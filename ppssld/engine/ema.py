"""Model EMA (PaddleClas's ``EMA: {decay: 0.9999}`` section).

EMA: a copy of the whole model whose every state entry (parameters and BatchNorm statistics)
follows ``ema = decay * ema + (1 - decay) * model`` after each optimizer update, as PaddleClas's
``ExponentialMovingAverage``. Checkpoints keep PaddleClas's names: with EMA, ``<tag>.pdparams``
holds the EMA weights and ``<tag>.pdema`` the trained weights (see
:class:`ppssld.engine.checkpoint.Checkpointer`), so ``best_model.pdparams`` is what PaddleClas
would export.
"""
import copy
import logging
from typing import Any, Dict, Optional

import paddle

from ppssld.utils.checks import is_number
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

EMA_KEYS = ("decay",)


class ModelEMA:
    """An exponential moving average of a model's state.

    Args:
        model: the (unwrapped) model; it is deep-copied.
        decay: weight of the old average, in [0, 1).
    """

    def __init__(self, model: paddle.nn.Layer, decay: float = 0.9999) -> None:
        if not is_number(decay) or not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA.decay must be a number in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model)
        self.module.eval()
        for param in self.module.parameters():
            param.stop_gradient = True

    @paddle.no_grad()
    def update(self, model: paddle.nn.Layer) -> None:
        """Move every EMA entry towards the model's (call after each optimizer update)."""
        current = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = current[name]
            if paddle.is_floating_point(ema_value):
                paddle.assign(ema_value * self.decay + value.astype(ema_value.dtype) * (1.0 - self.decay), ema_value)
            else:
                paddle.assign(value, ema_value)

    def state_dict(self) -> Dict[str, Any]:
        """The EMA weights (the model's structured names)."""
        return self.module.state_dict()

    def set_state_dict(self, state: Dict[str, Any]) -> None:
        """Load EMA weights saved by :meth:`state_dict` (or PaddleClas's ``.pdparams`` of an EMA run)."""
        missing, unexpected = self.module.set_state_dict(state)
        if missing or unexpected:
            raise ConfigError(f"EMA weights do not match the model: missing {list(missing)[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")


def build_ema(config: Dict[str, Any], model: paddle.nn.Layer) -> Optional[ModelEMA]:
    """The EMA the config's ``EMA`` section asks for, or None."""
    if "EMA" not in config:
        return None
    section = config["EMA"] or {}
    if not isinstance(section, dict):
        raise ConfigError(f"EMA must be a mapping like {{decay: 0.9999}}, got {section!r}")
    for key in section:
        if key not in EMA_KEYS:
            raise ConfigError(f"unknown key EMA.{key}; valid keys: {', '.join(EMA_KEYS)}")
    ema = ModelEMA(model, section.get("decay", 0.9999))
    logger.info("EMA of the model weights, decay %g: evaluated beside the model; <tag>.pdparams holds the EMA "
                "weights and <tag>.pdema the trained ones (PaddleClas's names)", ema.decay)
    return ema
