"""Non-finite losses found without a host read per step: codes kept on the device, read once per print window."""
from typing import List

import paddle

from ppssld.engine import distributed
from ppssld.utils.errors import PpssldError


class TrainingDivergedError(PpssldError, RuntimeError):
    """The loss became NaN or infinite."""


def _finite_codes(values: paddle.Tensor) -> paddle.Tensor:
    """int64 codes of float ``values``: 0 finite, 1 nan, 2 inf, 3 -inf (finite numbers ranks can all-reduce)."""
    values = values.astype("float32")
    one = paddle.ones_like(values, dtype="int64")
    kind = paddle.where(paddle.isnan(values), one, paddle.where(values > 0, one * 2, one * 3))
    return kind * paddle.logical_not(paddle.isfinite(values)).astype("int64")


class FiniteWatch:
    """Whether each step's loss since the last read was finite, kept on the device (no host read per step).

    One process: the step's loss is only kept (a detach, no kernel); :meth:`codes` turns the window into
    codes at the read. Several processes: each step's code goes through one small all-reduce on the
    device before backward (still no host read), so every rank holds every rank's codes, and a rank
    that died surfaces in that Python-level collective as :class:`PeerLostError` rather than as an
    abort inside the gradient all-reduce.
    """

    VALUES = {1: float("nan"), 2: float("inf"), 3: float("-inf")}

    def __init__(self, world: int = 1) -> None:
        self.world = world
        self._window: List[paddle.Tensor] = []

    @paddle.no_grad()
    def observe(self, loss: paddle.Tensor) -> None:
        """Keep this step's loss (one process) or its all-reduced ``[ranks, 1]`` codes (several)."""
        value = loss.detach()
        if self.world > 1:
            value = distributed.gather_rows(_finite_codes(value.reshape([-1]).sum().reshape([1])))
        self._window.append(value)

    @paddle.no_grad()
    def codes(self) -> paddle.Tensor:
        """int64 ``[ranks, steps in the window]`` codes, on the device; the window is emptied."""
        window, self._window = self._window, []
        if not window:
            return paddle.zeros([self.world, 0], "int64")
        if self.world > 1:
            return paddle.concat(window, axis=1)
        return _finite_codes(paddle.stack([v.astype("float32").reshape([-1]).sum() for v in window])).reshape([1, -1])
