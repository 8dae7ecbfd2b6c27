"""Build the optimizer and its LR schedule from the ``Optimizer`` section."""
import copy
import logging
from typing import Any, Dict, Optional, Sequence, Set, Tuple, Union

import paddle
import paddle.nn as nn

from ppssld.optim.optimizers import NamedParams, OptimizerSpec
from ppssld.optim.schedulers import WarmupSchedule, build_lr_scheduler
from ppssld.utils.checks import is_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import OPTIMIZERS

logger = logging.getLogger(__name__)

Parameters = Union[nn.Layer, Sequence[paddle.Tensor], Sequence[Tuple[str, paddle.Tensor]]]
_VALIDATE_EPOCHS = 10 ** 6  # stands in for Global.epochs when only checking the config
_CLIP_GRAD_LOGGED: Set[str] = set()  # config locations whose clip_grad note was logged


def named_trainable(parameters: Parameters) -> NamedParams:
    """Trainable (``stop_gradient == False``) parameters with names, each once.

    Args:
        parameters: a Layer (structural names), ``named_parameters()`` pairs, or bare
            parameters (their Paddle unique names are used).
    Returns:
        ``[(name, parameter), ...]`` in the given order.
    """
    if isinstance(parameters, nn.Layer):
        items = list(parameters.named_parameters())
    else:
        items = []
        for item in parameters:
            if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
                items.append((item[0], item[1]))
            else:
                items.append((item.name, item))
    seen, named = set(), []
    for name, param in items:
        if not param.stop_gradient and id(param) not in seen:
            seen.add(id(param))
            named.append((name, param))
    return named


def _split(optim_cfg: Any, where: str) -> Tuple[str, Any, Dict[str, Any]]:
    if isinstance(optim_cfg, list):
        raise ConfigError(f"{where} as a list of scoped optimizers is not supported: give one mapping "
                          f"{{name: Momentum, momentum: 0.9, lr: {{...}}}}")
    if not isinstance(optim_cfg, dict) or "name" not in optim_cfg:
        raise ConfigError(f"{where} must be a mapping with a 'name', e.g. {{name: Momentum, momentum: 0.9, "
                          f"lr: {{name: Cosine, learning_rate: 0.1}}}}, got {optim_cfg!r}")
    cfg = copy.deepcopy(optim_cfg)
    name = str(cfg.pop("name"))
    if "lr" not in cfg:
        raise ConfigError(f"{where}.lr is missing, e.g. lr: {{name: Cosine, learning_rate: 0.1, warmup_epoch: 5}}")
    return name, cfg.pop("lr"), cfg


def _clip_grad(cfg: Dict[str, Any], where: str) -> Optional[float]:
    """Pop ``clip_grad``: its max global norm, or None (absent, ``null`` or PaddleClas's ``None``)."""
    value = cfg.pop("clip_grad", None)
    if value is None or value == "None":  # PaddleClas literal-evaluates the YAML string "None"
        return None
    if not is_number(value) or value <= 0:
        raise ConfigError(f"{where}.clip_grad must be a number > 0 (the max global L2 norm of all gradients) "
                          f"or null, got {value!r}")
    if where not in _CLIP_GRAD_LOGGED:
        _CLIP_GRAD_LOGGED.add(where)
        logger.info("%s.clip_grad: %s: gradients are clipped by their global L2 norm (PaddleClas accepts this "
                    "key and ignores it)", where, value)
    return float(value)


def _spec(name: str, cfg: Dict[str, Any], where: str) -> OptimizerSpec:
    clip_grad = _clip_grad(cfg, where)
    OPTIMIZERS.check_kwargs(name, cfg, where)
    try:
        spec = OPTIMIZERS.build(name, cfg, where)
        if clip_grad is not None:
            spec.set_global_clip(clip_grad)
    except ConfigError as exc:
        raise ConfigError(f"{where} ({name}): {exc}") from exc
    return spec


def build_optimizer(optim_cfg: Dict[str, Any], parameters: Parameters, epochs: int, steps_per_epoch: int,
                    where: str = "Optimizer") -> Tuple[paddle.optimizer.Optimizer, WarmupSchedule]:
    """Build ``(optimizer, lr_scheduler)``.

    Call ``lr_scheduler.step()`` once after every ``optimizer.step()``. The optimizer's
    ``state_dict()`` includes the scheduler's state, so ``set_state_dict`` resumes both.

    Args:
        optim_cfg: PaddleClas ``Optimizer`` mapping (not mutated).
        parameters: a Layer, ``named_parameters()`` pairs or parameters; frozen ones
            (``stop_gradient``) are dropped. Pass the Layer or named pairs for
            ``no_weight_decay_name`` to match structural names.
        epochs: ``Global.epochs``.
        steps_per_epoch: optimizer steps per epoch.
        where: config location for error messages.
    Returns:
        The Paddle optimizer and its ``LRScheduler``.
    Raises:
        ConfigError: unknown names or keys, bad values, or no trainable parameter.
    """
    name, lr_cfg, cfg = _split(optim_cfg, where)
    spec = _spec(name, cfg, where)
    scheduler = build_lr_scheduler(lr_cfg, epochs, steps_per_epoch, f"{where}.lr")
    named = named_trainable(parameters)
    if not named:
        raise ConfigError(f"{where}: no trainable parameter reaches the optimizer (every parameter has "
                          f"stop_gradient=True; check Arch.freeze_params_list)")
    if spec.no_decay_names and all(n == p.name for n, p in named):
        logger.warning("%s.no_weight_decay_name is matched against Paddle's unique parameter names (e.g. %r); "
                       "pass the model or named_parameters() to match structural names", where, named[0][0])
    optimizer = spec.create(scheduler, named)
    logger.info("%s: %s over %d parameter tensors (%d values), %s schedule, %d epochs x %d steps",
                where, name, len(named), sum(int(p.size) for _, p in named), type(scheduler).__name__,
                epochs, steps_per_epoch)
    return optimizer, scheduler


def validate_optimizer_config(optim_cfg: Any, where: str = "Optimizer", epochs: Optional[int] = None) -> None:
    """Check the ``Optimizer`` section (names, keys, values) without parameters.

    Args:
        optim_cfg: the section.
        where: config location for error messages.
        epochs: ``Global.epochs`` if known (enables epoch-dependent warnings).
    Raises:
        ConfigError: as :func:`build_optimizer`.
    """
    name, lr_cfg, cfg = _split(optim_cfg, where)
    _spec(name, cfg, where)
    build_lr_scheduler(lr_cfg, int(epochs) if epochs else _VALIDATE_EPOCHS, 1, f"{where}.lr")
