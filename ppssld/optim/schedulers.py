"""Learning-rate schedules (``Optimizer.lr``), registered in SCHEDULERS.

Every schedule is a closed-form function of the iteration counter ``last_epoch``
(Paddle's name; here it counts optimizer steps). The engine calls ``step()`` once after
every optimizer step; iteration ``i`` (0-based) therefore trains with ``value_at(i)``.
``state_dict()`` / ``set_state_dict()`` carry ``last_epoch`` and ``last_lr``, and the
optimizer's own state dict embeds them, so resuming is exact.

Warmup is linear from ``warmup_start_lr`` (at iteration 0) towards the schedule's first
value, over ``warmup_epoch * steps_per_epoch`` iterations (rounded) or ``warmup_steps``.
With ``by_epoch: True`` the counter is converted to whole epochs first (values change
only at epoch boundaries, warmup counted in epochs), as PaddleClas's per-epoch mode.
"""
import bisect
import logging
import math
from typing import Any, List, Optional, Sequence

from paddle.optimizer.lr import LRScheduler

from ppssld.utils.checks import is_finite_number, is_int, is_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import SCHEDULERS

logger = logging.getLogger(__name__)


def schedule_number(value: Any, what: str, minimum: float = 0.0) -> float:
    if not is_finite_number(value) or value < minimum:
        raise ConfigError(f"{what} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


class WarmupSchedule(LRScheduler):
    """Base class: linear warmup, then :meth:`body`.

    Args:
        epochs: total epochs (``Global.epochs``).
        steps_per_epoch: optimizer steps per epoch.
        base_lr: the value warmup ends at.
        warmup_epoch: warmup length in epochs (may be fractional unless ``by_epoch``).
        warmup_steps: warmup length in iterations (alternative to ``warmup_epoch``).
        warmup_start_lr: value at iteration 0 of the warmup.
        by_epoch: change the value only at epoch boundaries.
        last_epoch: PaddleClas key; only -1 is accepted (resume from checkpoints instead).
    """

    def __init__(self, epochs: int, steps_per_epoch: int, base_lr: float, warmup_epoch: float = 0,
                 warmup_steps: int = 0, warmup_start_lr: float = 0.0, by_epoch: bool = False,
                 last_epoch: int = -1) -> None:
        if not is_int(epochs) or epochs < 1:
            raise ConfigError(f"epochs must be an int >= 1, got {epochs!r}")
        if not is_int(steps_per_epoch) or steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
        if last_epoch != -1:
            raise ConfigError(f"last_epoch must be -1 (got {last_epoch!r}); resume with Global.checkpoints, "
                              f"which restores the schedule exactly")
        warmup_epoch = schedule_number(warmup_epoch, "warmup_epoch")
        warmup_steps = schedule_number(warmup_steps, "warmup_steps")
        if warmup_epoch and warmup_steps:
            raise ConfigError("set either warmup_epoch or warmup_steps, not both")
        if warmup_steps and by_epoch:
            raise ConfigError("warmup_steps counts iterations; with by_epoch: True use warmup_epoch")
        if warmup_steps != int(warmup_steps):
            raise ConfigError(f"warmup_steps must be an integer, got {warmup_steps!r}")
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.by_epoch = bool(by_epoch)
        self.total = epochs if self.by_epoch else epochs * steps_per_epoch
        warmup = int(round(warmup_epoch)) if self.by_epoch else (
            int(warmup_steps) or int(round(warmup_epoch * steps_per_epoch)))
        if warmup >= self.total and warmup > 0:
            unit = "epochs" if self.by_epoch else "steps"
            logger.info("LR warmup (%d %s) spans the whole run (%d %s): the LR rises linearly to %s and the "
                        "schedule's decay never starts (Optimizer.lr.warmup_epoch below Global.epochs changes that)",
                        warmup, unit, self.total, unit, base_lr)
            warmup = self.total
        self.warmup = warmup
        self.warmup_start_lr = schedule_number(warmup_start_lr, "warmup_start_lr")
        super().__init__(learning_rate=schedule_number(base_lr, "learning_rate"), last_epoch=-1)

    def body(self, t: int) -> float:
        """Value at counter ``t >= warmup`` (steps or epochs, see ``by_epoch``)."""
        raise NotImplementedError

    def value_at(self, step: int) -> float:
        """Learning rate used by iteration ``step`` (0-based)."""
        t = step // self.steps_per_epoch if self.by_epoch else step
        if t < self.warmup:
            return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * t / self.warmup
        return float(self.body(t))

    def get_lr(self) -> float:
        return self.value_at(self.last_epoch)

    def state_dict(self) -> dict:
        """``last_epoch`` and ``last_lr``; with warmup also ``LinearWarmup_LR``, the nested state
        PaddleClas's warmup scheduler (paddle's ``LinearWarmup``) requires when it resumes."""
        state = super().state_dict()
        if self.warmup and not self.by_epoch:
            after = max(int(self.last_epoch) - self.warmup, 0)
            state["LinearWarmup_LR"] = {"last_epoch": after, "last_lr": float(self.body(self.warmup + after))}
        return state

    def set_state_dict(self, state_dict: dict) -> None:
        """Restore ``last_epoch`` and ``last_lr`` (a nested ``LinearWarmup_LR`` state is implied by them)."""
        super().set_state_dict({k: v for k, v in state_dict.items() if k != "LinearWarmup_LR"})


@SCHEDULERS.register()
class Cosine(WarmupSchedule):
    """Linear warmup, then cosine from ``learning_rate`` to ``eta_min`` over the remaining iterations.

    ``lr(u) = eta_min + (learning_rate - eta_min) * (1 + cos(pi * u / U)) / 2`` with ``u``
    counted from the end of warmup and ``U = total - warmup`` (as PaddleClas).
    """

    def __init__(self, learning_rate: float, eta_min: float = 0.0, warmup_epoch: float = 0,
                 warmup_steps: int = 0, warmup_start_lr: float = 0.0, by_epoch: bool = False,
                 last_epoch: int = -1, *, epochs: int, steps_per_epoch: int) -> None:
        self.eta_min = schedule_number(eta_min, "eta_min")
        super().__init__(epochs, steps_per_epoch, learning_rate, warmup_epoch, warmup_steps,
                         warmup_start_lr, by_epoch, last_epoch)

    def body(self, t: int) -> float:
        span = self.total - self.warmup
        if span <= 0:
            return self.base_lr
        u = min(t - self.warmup, span)
        return self.eta_min + (self.base_lr - self.eta_min) * (1.0 + math.cos(math.pi * u / span)) / 2.0


@SCHEDULERS.register()
class Piecewise(WarmupSchedule):
    """Step values: ``values[i]`` from epoch ``decay_epochs[i-1]`` on (``values[0]`` before).

    Boundaries are counted from the start of training (PaddleClas shifts them by the
    warmup length when warmup is used; ppssld does not). With ``learning_rate`` and no
    ``values``, PaddleClas's rule applies: divide by 10 every 30 epochs.
    """

    def __init__(self, decay_epochs: Optional[Sequence[int]] = None, values: Optional[Sequence[float]] = None,
                 learning_rate: Optional[float] = None, warmup_epoch: float = 0, warmup_steps: int = 0,
                 warmup_start_lr: float = 0.0, by_epoch: bool = False, last_epoch: int = -1, *,
                 epochs: int, steps_per_epoch: int) -> None:
        if values is None:
            if learning_rate is None:
                raise ConfigError("Piecewise needs decay_epochs and values (or learning_rate alone)")
            lr = schedule_number(learning_rate, "learning_rate")
            decay_epochs = list(range(30, max(int(epochs), 1), 30))
            values = [lr * 0.1 ** i for i in range(len(decay_epochs) + 1)]
        elif learning_rate is not None and float(learning_rate) != float(values[0]):
            logger.warning("Piecewise: learning_rate %s differs from values[0] %s; values are used",
                           learning_rate, values[0])
        decay_epochs = [] if decay_epochs is None else decay_epochs
        if not isinstance(decay_epochs, (list, tuple)) or not all(
                is_number(e) and e > 0 for e in decay_epochs):
            raise ConfigError(f"decay_epochs must be a list of positive epoch numbers, got {decay_epochs!r}")
        if list(decay_epochs) != sorted(set(decay_epochs)):
            raise ConfigError(f"decay_epochs must be strictly increasing, got {decay_epochs!r}")
        if not isinstance(values, (list, tuple)) or len(values) != len(decay_epochs) + 1:
            raise ConfigError(f"values must have one more entry than decay_epochs "
                              f"({len(decay_epochs)} boundaries), got {values!r}")
        self.values: List[float] = [schedule_number(v, "values[]") for v in values]
        self.decay_epochs = list(decay_epochs)
        unit = 1 if by_epoch else int(steps_per_epoch)
        self.boundaries = [int(round(e * unit)) for e in self.decay_epochs]  # needed by the first step()
        super().__init__(epochs, steps_per_epoch, self.values[0], warmup_epoch, warmup_steps,
                         warmup_start_lr, by_epoch, last_epoch)
        if any(e >= epochs for e in self.decay_epochs):
            logger.warning("Piecewise: decay_epochs %s reach Global.epochs=%d; later values are never used",
                           self.decay_epochs, epochs)

    def body(self, t: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, t)]


@SCHEDULERS.register(aliases=["ConstLR"])
class Constant(WarmupSchedule):
    """``learning_rate`` throughout (after an optional warmup)."""

    def __init__(self, learning_rate: float, warmup_epoch: float = 0, warmup_steps: int = 0,
                 warmup_start_lr: float = 0.0, by_epoch: bool = False, last_epoch: int = -1, *,
                 epochs: int, steps_per_epoch: int) -> None:
        super().__init__(epochs, steps_per_epoch, learning_rate, warmup_epoch, warmup_steps,
                         warmup_start_lr, by_epoch, last_epoch)

    def body(self, t: int) -> float:
        return self.base_lr


_ENGINE_KEYS = ("epochs", "steps_per_epoch", "step_each_epoch")


def build_lr_scheduler(lr_cfg: Any, epochs: int, steps_per_epoch: int, where: str = "Optimizer.lr") -> WarmupSchedule:
    """Build the schedule described by ``Optimizer.lr``.

    Args:
        lr_cfg: ``{name: Cosine, learning_rate: 0.1, ...}``; a mapping without ``name``, or a
            bare number, means ``Constant``.
        epochs: ``Global.epochs``.
        steps_per_epoch: optimizer steps per epoch (``len(train_loader)``).
        where: config location for error messages.
    Returns:
        The scheduler (a ``paddle.optimizer.lr.LRScheduler``).
    """
    if is_number(lr_cfg):
        lr_cfg = {"learning_rate": lr_cfg}
    if not isinstance(lr_cfg, dict):
        raise ConfigError(f"{where} must be a mapping like {{name: Cosine, learning_rate: 0.1}}, got {lr_cfg!r}")
    cfg = dict(lr_cfg)
    name = str(cfg.pop("name", "Constant"))
    if "step_each_epoch" in cfg:  # PaddleClas's configs carry it and its engine overwrites it
        logger.warning("%s.step_each_epoch=%r is ignored: the engine sets it from the data loader, as PaddleClas "
                       "does", where, cfg.pop("step_each_epoch"))
    for key in _ENGINE_KEYS:
        if key in cfg:
            raise ConfigError(f"{where}.{key} is set by the engine (from Global.epochs and the data loader); "
                              f"remove it")
    SCHEDULERS.check_kwargs(name, cfg, where)
    try:
        return SCHEDULERS.build(name, cfg, where, epochs=epochs, steps_per_epoch=steps_per_epoch)
    except ConfigError as exc:
        raise ConfigError(f"{where} ({name}): {exc}") from exc
    except TypeError as exc:  # a required parameter is missing
        raise ConfigError(f"{where} ({name}): {exc}") from exc
