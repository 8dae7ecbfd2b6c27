"""PaddleClas's other LR schedules: ``MultiStepDecay``, ``Step``, ``Linear``, ``OneCycleLR``, ``ReduceOnPlateau``.

Same parameter names and values as PaddleClas (``ppcls/optimizer/learning_rate.py``), where a
schedule with warmup is Paddle's ``LinearWarmup`` around the decay: the decay's own counter
starts at 0 when warmup ends, so milestones, step sizes and decay lengths count from the end of
warmup. Counters are optimizer steps, or whole epochs with ``by_epoch: True``. ``verbose`` is
accepted and ignored.

``ReduceOnPlateau`` changes its value only through :meth:`ReduceOnPlateau.observe`, which the
trainer calls with the evaluation metric after each evaluation (PaddleClas steps it with the
eval accuracy; choose ``mode: max`` for an accuracy). Its plateau state is part of
``state_dict()`` and therefore of the optimizer's checkpoint.
"""
import bisect
import logging
import math
from typing import Any, Optional, Sequence

from ppssld.optim.schedulers import WarmupSchedule, schedule_number
from ppssld.utils.checks import is_int, is_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import SCHEDULERS

logger = logging.getLogger(__name__)


def _epoch_unit(by_epoch: bool, steps_per_epoch: int) -> int:
    return 1 if by_epoch else int(steps_per_epoch)


@SCHEDULERS.register()
class MultiStepDecay(WarmupSchedule):
    """``learning_rate * gamma ** (milestones passed)``; milestones in epochs, counted after warmup.

    Args:
        learning_rate: the starting value.
        milestones: increasing epoch numbers (PaddleClas multiplies them by the steps per epoch).
        gamma: factor applied at each milestone.
    """

    def __init__(self, learning_rate: float, milestones: Sequence[float], gamma: float = 0.1,
                 warmup_epoch: float = 0, warmup_steps: int = 0, warmup_start_lr: float = 0.0,
                 by_epoch: bool = False, last_epoch: int = -1, verbose: bool = False, *,
                 epochs: int, steps_per_epoch: int) -> None:
        if not isinstance(milestones, (list, tuple)) or not milestones or not all(
                is_number(m) and m >= 0 for m in milestones):
            raise ConfigError(f"milestones must be a non-empty list of epoch numbers, got {milestones!r}")
        if list(milestones) != sorted(milestones):
            raise ConfigError(f"milestones must be increasing, got {milestones!r}")
        self.gamma = schedule_number(gamma, "gamma")
        unit = _epoch_unit(by_epoch, steps_per_epoch)
        self.milestones = [m * unit for m in milestones]
        super().__init__(epochs, steps_per_epoch, learning_rate, warmup_epoch, warmup_steps,
                         warmup_start_lr, by_epoch, last_epoch)

    def body(self, t: int) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, t - self.warmup)


@SCHEDULERS.register()
class Step(WarmupSchedule):
    """``learning_rate * gamma ** (u // step_size)``, ``u`` counted after warmup.

    Args:
        learning_rate: the starting value.
        step_size: epochs between decays (may be fractional; PaddleClas uses
            ``int(step_size * steps_per_epoch)`` steps, or ``step_size`` epochs with ``by_epoch``).
        gamma: factor per decay.
    """

    def __init__(self, learning_rate: float, step_size: float, gamma: float, warmup_epoch: float = 0,
                 warmup_steps: int = 0, warmup_start_lr: float = 0.0, by_epoch: bool = False,
                 last_epoch: int = -1, verbose: bool = False, *, epochs: int, steps_per_epoch: int) -> None:
        step_size = schedule_number(step_size, "step_size")
        self.step_size = int(step_size) if by_epoch else int(step_size * steps_per_epoch)
        if self.step_size < 1:
            raise ConfigError(f"step_size {step_size!r} is shorter than one "
                              f"{'epoch' if by_epoch else 'step'}; it must cover at least one")
        self.gamma = schedule_number(gamma, "gamma")
        super().__init__(epochs, steps_per_epoch, learning_rate, warmup_epoch, warmup_steps,
                         warmup_start_lr, by_epoch, last_epoch)

    def body(self, t: int) -> float:
        return self.base_lr * self.gamma ** ((t - self.warmup) // self.step_size)


@SCHEDULERS.register()
class Linear(WarmupSchedule):
    """Polynomial decay (Paddle's ``PolynomialDecay``) from ``learning_rate`` to ``end_lr`` after warmup.

    ``lr(u) = (learning_rate - end_lr) * (1 - u / D) ** power + end_lr`` with ``D`` the steps (or
    epochs) left after warmup and ``u`` clipped to ``D``; with ``cycle: True`` ``D`` is
    multiplied by ``ceil(u / D)`` instead (restarts).
    """

    def __init__(self, learning_rate: float, end_lr: float = 0.0, power: float = 1.0, cycle: bool = False,
                 warmup_epoch: float = 0, warmup_steps: int = 0, warmup_start_lr: float = 0.0,
                 by_epoch: bool = False, last_epoch: int = -1, verbose: bool = False, *,
                 epochs: int, steps_per_epoch: int) -> None:
        self.end_lr = schedule_number(end_lr, "end_lr")
        self.power = schedule_number(power, "power")
        self.cycle = bool(cycle)
        super().__init__(epochs, steps_per_epoch, learning_rate, warmup_epoch, warmup_steps,
                         warmup_start_lr, by_epoch, last_epoch)

    def body(self, t: int) -> float:
        decay = self.total - self.warmup
        if decay <= 0:
            return self.base_lr
        u = t - self.warmup
        if self.cycle:
            decay = decay * (max(1, math.ceil(u / decay)))
        else:
            u = min(u, decay)
        return (self.base_lr - self.end_lr) * (1.0 - u / decay) ** self.power + self.end_lr


@SCHEDULERS.register(aliases=["OneCycle"])
class OneCycleLR(WarmupSchedule):
    """One-cycle policy (Paddle's ``OneCycleLR``): up from ``max_learning_rate / divide_factor`` to
    ``max_learning_rate`` over ``phase_pct`` of the steps, then down to ``end_learning_rate``
    (``three_phase``: back to the initial value first). As PaddleClas, the cycle spans
    ``epochs * steps_per_epoch`` counter values; it holds its last value past them.
    """

    def __init__(self, max_learning_rate: float, divide_factor: float = 25.0, end_learning_rate: float = 1e-10,
                 phase_pct: float = 0.3, anneal_strategy: str = "cos", three_phase: bool = False,
                 warmup_epoch: float = 0, warmup_steps: int = 0, warmup_start_lr: float = 0.0,
                 by_epoch: bool = False, last_epoch: int = -1, verbose: bool = False, *,
                 epochs: int, steps_per_epoch: int) -> None:
        if anneal_strategy not in ("cos", "linear"):
            raise ConfigError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        phase_pct = schedule_number(phase_pct, "phase_pct")
        if phase_pct > 1 or (three_phase and phase_pct >= 0.5):
            raise ConfigError(f"phase_pct must be in [0, 1] (below 0.5 with three_phase), got {phase_pct!r}")
        top = schedule_number(max_learning_rate, "max_learning_rate")
        low = top / schedule_number(divide_factor, "divide_factor", minimum=1e-12)
        end = schedule_number(end_learning_rate, "end_learning_rate")
        n = int(epochs) * int(steps_per_epoch)
        if three_phase:
            self._points = [0.0, phase_pct * n - 1, 2 * phase_pct * n - 2, n - 1.0]
            self._values = [low, top, low, end]
        else:
            self._points = [0.0, phase_pct * n - 1, n - 1.0]
            self._values = [low, top, end]
        self.cycle_steps = n
        self.anneal_strategy = anneal_strategy
        super().__init__(epochs, steps_per_epoch, top, warmup_epoch, warmup_steps, warmup_start_lr,
                         by_epoch, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)
        return (end - start) * pct + start

    def body(self, t: int) -> float:
        u = min(t - self.warmup, self.cycle_steps)
        last = len(self._values) - 2
        for i in range(len(self._values) - 1):
            if u <= self._points[i + 1] or i == last:
                span = self._points[i + 1] - self._points[i]
                return self._anneal(self._values[i], self._values[i + 1],
                                    (u - self._points[i]) / span if span else 1.0)
        return self._values[-1]  # not reached


@SCHEDULERS.register()
class ReduceOnPlateau(WarmupSchedule):
    """``learning_rate`` (after warmup), multiplied by ``factor`` when the observed metric stops improving.

    Paddle's rule: a metric better than the best by ``threshold`` (relative or absolute) resets the
    count; more than ``patience`` observations without improvement reduce the value (never below
    ``min_lr``, and only by more than ``epsilon``) and start ``cooldown`` ignored observations.
    """

    def __init__(self, learning_rate: float, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 epsilon: float = 1e-8, warmup_epoch: float = 0, warmup_steps: int = 0,
                 warmup_start_lr: float = 0.0, by_epoch: bool = False, last_epoch: int = -1,
                 verbose: bool = False, *, epochs: int, steps_per_epoch: int) -> None:
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ConfigError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        factor = schedule_number(factor, "factor")
        if factor >= 1.0:
            raise ConfigError(f"factor must be below 1.0 (the value is multiplied by it), got {factor!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if not is_int(value) or value < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor, self.patience, self.cooldown = factor, patience, cooldown
        self.threshold = schedule_number(threshold, "threshold")
        self.min_lr = schedule_number(min_lr, "min_lr")
        self.epsilon = schedule_number(epsilon, "epsilon")
        self.plateau_lr = schedule_number(learning_rate, "learning_rate")
        self.best: Optional[float] = None
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        super().__init__(epochs, steps_per_epoch, learning_rate, warmup_epoch, warmup_steps,
                         warmup_start_lr, by_epoch, last_epoch)

    def state_keys(self) -> None:
        self.keys = ["last_epoch", "last_lr", "plateau_lr", "best", "num_bad_epochs", "cooldown_counter"]

    def _is_better(self, current: float, best: float) -> bool:
        margin = best * self.threshold if self.threshold_mode == "rel" else self.threshold
        return current < best - margin if self.mode == "min" else current > best + margin

    def observe(self, metric: Any) -> None:
        """Feed one evaluation result (called by the trainer after each evaluation)."""
        current = float(metric)
        if not math.isfinite(current):
            logger.warning("ReduceOnPlateau: metric %r is not finite; ignored", metric)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            return
        if self.best is None or self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs > self.patience:
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
            new_lr = max(self.plateau_lr * self.factor, self.min_lr)
            if self.plateau_lr - new_lr > self.epsilon:
                logger.info("ReduceOnPlateau: no improvement for %d evaluations; learning rate %.3g -> %.3g",
                            self.patience + 1, self.plateau_lr, new_lr)
                self.plateau_lr = new_lr
        self.last_lr = self.get_lr()

    def body(self, t: int) -> float:
        return self.plateau_lr
