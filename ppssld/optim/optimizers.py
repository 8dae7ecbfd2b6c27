"""Optimizers (``Optimizer.name``), registered in OPTIMIZERS with PaddleClas's keys.

A registered class is a *spec*: it validates the config keys; :meth:`OptimizerSpec.create`
then makes the Paddle optimizer for given parameters and schedule.

Weight decay:

* Momentum, SGD, RMSProp, Adam: L2/L1 added to the gradient, from ``regularizer:
  {name: L2, coeff: 4e-5}`` or a bare ``weight_decay: 4e-5`` (L2). A parameter whose
  own ``ParamAttr`` carries a regularizer keeps it (Paddle's rule).
* AdamW: decoupled ``weight_decay`` (Paddle's default 0.01); ``regularizer`` is refused.
* ``no_weight_decay_name`` (space-separated substrings, or a list) and
  ``one_dim_param_no_weight_decay`` exclude parameters from decay. Names are matched
  against structural names (``Student.fc.bias``) when the caller passes a Layer or
  ``named_parameters()``, else against Paddle's unique names (``linear_0.b_0``).

Parameter groups are never used: Paddle's groups overwrite each parameter's
``optimize_attr['learning_rate']``, which would erase ``lr_mult_list``. Coupled no-decay
is implemented by giving those parameters an ``L2Decay(0.0)`` regularizer instead.
"""
import logging
from typing import Any, Dict, List, Optional, Tuple

import paddle
from paddle.regularizer import L1Decay, L2Decay

from ppssld.utils.checks import is_number
from ppssld.utils.errors import ConfigError, did_you_mean
from ppssld.utils.registry import OPTIMIZERS

logger = logging.getLogger(__name__)

NamedParams = List[Tuple[str, paddle.Tensor]]
_REGULARIZERS = {"L2": L2Decay, "L2Decay": L2Decay, "L1": L1Decay, "L1Decay": L1Decay}
_SAVED = "_ppssld_saved_regularizer"


def _positive(value: Any, what: str, allow_zero: bool = True) -> float:
    if not is_number(value) or value < 0 or (not allow_zero and value == 0):
        raise ConfigError(f"{what} must be a number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def _name_list(value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"no_weight_decay_name must be a space-separated string or a list of strings, got {value!r}")


def build_regularizer(cfg: Any, where: str = "Optimizer.regularizer") -> Optional[Any]:
    """``{name: L2, coeff: 4e-5}`` -> ``paddle.regularizer.L2Decay(4e-5)`` (None stays None)."""
    if cfg is None:
        return None
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ConfigError(f"{where} must be a mapping like {{name: L2, coeff: 1e-4}}, got {cfg!r}")
    extra = set(cfg) - {"name", "coeff"}
    if extra:
        raise ConfigError(f"{where} has unknown keys {sorted(extra)}.{did_you_mean(sorted(extra)[0], ['coeff'])} "
                          f"Valid keys: name, coeff")
    if cfg["name"] not in _REGULARIZERS:
        raise ConfigError(f"unknown regularizer {cfg['name']!r} at {where}.{did_you_mean(cfg['name'], _REGULARIZERS)} "
                          f"Valid: L1, L2")
    return _REGULARIZERS[cfg["name"]](_positive(cfg.get("coeff", 0.0), f"{where}.coeff"))


class OptimizerSpec:
    """Validated optimizer settings shared by every optimizer.

    Args:
        no_weight_decay_name: substrings of parameter names excluded from decay.
        one_dim_param_no_weight_decay: exclude every 1-D parameter (biases, norms).
        clip_norm: clip each gradient tensor to this L2 norm (``ClipGradByNorm``, as PaddleClas).
            ``clip_grad`` (global-norm clipping) is set by the builder through
            :meth:`set_global_clip`.
        multi_precision: passed to Paddle (keeps float32 master weights under AMP O2).
    """

    def __init__(self, no_weight_decay_name: Any = None, one_dim_param_no_weight_decay: bool = False,
                 clip_norm: Optional[float] = None, multi_precision: bool = False) -> None:
        self.no_decay_names = _name_list(no_weight_decay_name)
        self.one_dim_no_decay = bool(one_dim_param_no_weight_decay)
        self.clip_norm = None if clip_norm is None else _positive(clip_norm, "clip_norm", allow_zero=False)
        self.multi_precision = bool(multi_precision)
        self.clip_global_norm: Optional[float] = None

    def set_global_clip(self, max_norm: float) -> None:
        """Clip all gradients together to global L2 norm ``max_norm`` (``ClipGradByGlobalNorm``)."""
        if self.clip_norm is not None:
            raise ConfigError("set either clip_norm (each gradient tensor to its own norm, PaddleClas's "
                              "ClipGradByNorm) or clip_grad (all gradients by their global norm), not both")
        self.clip_global_norm = _positive(max_norm, "clip_grad", allow_zero=False)

    def excluded(self, named: NamedParams) -> List[paddle.Tensor]:
        """Parameters that must not be decayed."""
        return [p for n, p in named if any(s in n for s in self.no_decay_names)
                or (self.one_dim_no_decay and len(p.shape) == 1)]

    def grad_clip(self) -> Optional[Any]:
        """Paddle's gradient clip for this config, or None."""
        if self.clip_global_norm is not None:
            return paddle.nn.ClipGradByGlobalNorm(self.clip_global_norm)
        return paddle.nn.ClipGradByNorm(self.clip_norm) if self.clip_norm else None

    def create(self, learning_rate: Any, named: NamedParams) -> paddle.optimizer.Optimizer:
        """Make the Paddle optimizer for ``named`` (trainable parameters) and the schedule."""
        raise NotImplementedError


class CoupledDecaySpec(OptimizerSpec):
    """Optimizers whose decay is added to the gradient (``regularizer`` or ``weight_decay``)."""

    def __init__(self, regularizer: Optional[Dict[str, Any]] = None, weight_decay: Optional[float] = None,
                 **common: Any) -> None:
        super().__init__(**common)
        if regularizer is not None and weight_decay is not None:
            raise ConfigError("set either regularizer or weight_decay, not both")
        self.regularizer = build_regularizer(regularizer) if regularizer is not None else (
            L2Decay(_positive(weight_decay, "weight_decay")) if weight_decay is not None else None)

    def prepare(self, named: NamedParams) -> List[paddle.Tensor]:
        """Restore earlier no-decay marks, then mark this config's excluded parameters."""
        params = [p for _, p in named]
        for p in params:
            if hasattr(p, _SAVED):
                p.regularizer = getattr(p, _SAVED)
                delattr(p, _SAVED)
        excluded = self.excluded(named)
        if excluded and self.regularizer is not None:
            for p in excluded:
                setattr(p, _SAVED, p.regularizer)
                p.regularizer = L2Decay(0.0)
            logger.info("weight decay disabled for %d of %d parameter tensors", len(excluded), len(params))
        return params


@OPTIMIZERS.register()
class Momentum(CoupledDecaySpec):
    """SGD with momentum (``paddle.optimizer.Momentum``); PaddleClas keys."""

    def __init__(self, momentum: float = 0.9, use_nesterov: bool = False, regularizer: Optional[Dict[str, Any]] = None,
                 weight_decay: Optional[float] = None, no_weight_decay_name: Any = None,
                 one_dim_param_no_weight_decay: bool = False, clip_norm: Optional[float] = None,
                 multi_precision: bool = False) -> None:
        super().__init__(regularizer, weight_decay, no_weight_decay_name=no_weight_decay_name,
                         one_dim_param_no_weight_decay=one_dim_param_no_weight_decay, clip_norm=clip_norm,
                         multi_precision=multi_precision)
        self.momentum = _positive(momentum, "momentum")
        self.use_nesterov = bool(use_nesterov)

    def create(self, learning_rate: Any, named: NamedParams) -> paddle.optimizer.Optimizer:
        return paddle.optimizer.Momentum(learning_rate=learning_rate, momentum=self.momentum,
                                         parameters=self.prepare(named), use_nesterov=self.use_nesterov,
                                         weight_decay=self.regularizer, grad_clip=self.grad_clip(),
                                         multi_precision=self.multi_precision)


@OPTIMIZERS.register()
class SGD(CoupledDecaySpec):
    """Plain SGD (``paddle.optimizer.SGD``)."""

    def __init__(self, regularizer: Optional[Dict[str, Any]] = None, weight_decay: Optional[float] = None,
                 no_weight_decay_name: Any = None, one_dim_param_no_weight_decay: bool = False,
                 clip_norm: Optional[float] = None, multi_precision: bool = False) -> None:
        super().__init__(regularizer, weight_decay, no_weight_decay_name=no_weight_decay_name,
                         one_dim_param_no_weight_decay=one_dim_param_no_weight_decay, clip_norm=clip_norm,
                         multi_precision=multi_precision)

    def create(self, learning_rate: Any, named: NamedParams) -> paddle.optimizer.Optimizer:
        return paddle.optimizer.SGD(learning_rate=learning_rate, parameters=self.prepare(named),
                                    weight_decay=self.regularizer, grad_clip=self.grad_clip(),
                                    multi_precision=self.multi_precision)


@OPTIMIZERS.register()
class RMSProp(CoupledDecaySpec):
    """RMSProp (``paddle.optimizer.RMSProp``); PaddleClas's MobileNet recipes use it."""

    def __init__(self, momentum: float = 0.0, rho: float = 0.95, epsilon: float = 1e-6, centered: bool = False,
                 regularizer: Optional[Dict[str, Any]] = None, weight_decay: Optional[float] = None,
                 no_weight_decay_name: Any = None, one_dim_param_no_weight_decay: bool = False,
                 clip_norm: Optional[float] = None, multi_precision: bool = False) -> None:
        super().__init__(regularizer, weight_decay, no_weight_decay_name=no_weight_decay_name,
                         one_dim_param_no_weight_decay=one_dim_param_no_weight_decay, clip_norm=clip_norm,
                         multi_precision=multi_precision)
        self.momentum = _positive(momentum, "momentum")
        self.rho = _positive(rho, "rho")
        self.epsilon = _positive(epsilon, "epsilon", allow_zero=False)
        self.centered = bool(centered)

    def create(self, learning_rate: Any, named: NamedParams) -> paddle.optimizer.Optimizer:
        if self.multi_precision:
            logger.warning("RMSProp: Paddle's RMSProp has no multi_precision option; ignored")
        return paddle.optimizer.RMSProp(learning_rate=learning_rate, rho=self.rho, epsilon=self.epsilon,
                                        momentum=self.momentum, centered=self.centered,
                                        parameters=self.prepare(named), weight_decay=self.regularizer,
                                        grad_clip=self.grad_clip())


@OPTIMIZERS.register()
class Adam(CoupledDecaySpec):
    """Adam with coupled (L2-in-gradient) decay (``paddle.optimizer.Adam``)."""

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, lazy_mode: bool = False,
                 regularizer: Optional[Dict[str, Any]] = None, weight_decay: Optional[float] = None,
                 no_weight_decay_name: Any = None, one_dim_param_no_weight_decay: bool = False,
                 clip_norm: Optional[float] = None, multi_precision: bool = False) -> None:
        super().__init__(regularizer, weight_decay, no_weight_decay_name=no_weight_decay_name,
                         one_dim_param_no_weight_decay=one_dim_param_no_weight_decay, clip_norm=clip_norm,
                         multi_precision=multi_precision)
        self.beta1, self.beta2 = _positive(beta1, "beta1"), _positive(beta2, "beta2")
        self.epsilon = _positive(epsilon, "epsilon", allow_zero=False)
        self.lazy_mode = bool(lazy_mode)

    def create(self, learning_rate: Any, named: NamedParams) -> paddle.optimizer.Optimizer:
        return paddle.optimizer.Adam(learning_rate=learning_rate, beta1=self.beta1, beta2=self.beta2,
                                     epsilon=self.epsilon, parameters=self.prepare(named),
                                     weight_decay=self.regularizer, grad_clip=self.grad_clip(),
                                     lazy_mode=self.lazy_mode, multi_precision=self.multi_precision)


@OPTIMIZERS.register()
class AdamW(OptimizerSpec):
    """AdamW with decoupled ``weight_decay`` (``paddle.optimizer.AdamW``); PaddleClas keys.

    ``no_weight_decay_name`` / ``one_dim_param_no_weight_decay`` select parameters that
    AdamW's ``apply_decay_param_fun`` leaves undecayed.
    """

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, weight_decay: float = 0.01,
                 no_weight_decay_name: Any = None, one_dim_param_no_weight_decay: bool = False,
                 clip_norm: Optional[float] = None, multi_precision: bool = False,
                 regularizer: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(no_weight_decay_name, one_dim_param_no_weight_decay, clip_norm, multi_precision)
        if regularizer is not None:
            raise ConfigError("AdamW decays weights itself: use weight_decay: <coeff>, not regularizer")
        self.beta1, self.beta2 = _positive(beta1, "beta1"), _positive(beta2, "beta2")
        self.epsilon = _positive(epsilon, "epsilon", allow_zero=False)
        self.weight_decay = _positive(weight_decay, "weight_decay")

    def create(self, learning_rate: Any, named: NamedParams) -> paddle.optimizer.Optimizer:
        skip = {p.name for p in self.excluded(named)}
        if skip:
            logger.info("AdamW: weight decay disabled for %d of %d parameter tensors", len(skip), len(named))
        return paddle.optimizer.AdamW(learning_rate=learning_rate, beta1=self.beta1, beta2=self.beta2,
                                      epsilon=self.epsilon, parameters=[p for _, p in named],
                                      weight_decay=self.weight_decay, grad_clip=self.grad_clip(),
                                      apply_decay_param_fun=lambda name: name not in skip,
                                      multi_precision=self.multi_precision)
