"""A trainable feature connector, and PaddleClas's ``DistanceLoss`` as a pair base loss.

The connector (Heo et al. 2019, "A Comprehensive Overhaul of Feature Distillation") maps the
student's feature to the teacher's channels before a feature loss compares them: a 1x1
convolution without bias, then batch normalisation. PaddleClas has no general connector (its
``MGDLoss`` carries a bare 1x1 ``align`` conv); ppssld offers one as the ``connector`` option of
``DistillationPairLoss``, with MGD's channel keys::

    - DistillationPairLoss:
        base_loss_name: DistanceLoss
        mode: l2
        model_name_pairs: [[Student, Teacher]]
        s_key: blocks[5]
        t_key: blocks[5]
        connector: {student_channels: 128, teacher_channels: 256}

Like every loss parameter it is trained by the optimizer, saved in checkpoints under
``loss_func.<i>.connector.{conv,bn}.*`` (BN running statistics included) and resumed; export
never builds the loss, so the ``_ssld`` model has no connector.
"""
import logging
import math
from typing import Any, Dict

import paddle
import paddle.nn as nn

from ppssld.loss import kd_functional as KF
from ppssld.utils.checks import is_int, is_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import PAIR_BASE_LOSSES

logger = logging.getLogger(__name__)


def _channels(value: Any, what: str) -> int:
    if not is_int(value) or value < 1:
        raise ConfigError(f"connector.{what} must be a positive integer (a feature's channel count), got {value!r}")
    return value


class Connector(nn.Layer):
    """``BN(conv1x1(x))`` from ``student_channels`` to ``teacher_channels`` (conv: no bias,
    Kaiming-normal weights with fan-out; BN: weight 1, bias 0)."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        s_ch = _channels(student_channels, "student_channels")
        t_ch = _channels(teacher_channels, "teacher_channels")
        std = math.sqrt(2.0 / t_ch)
        self.conv = nn.Conv2D(s_ch, t_ch, 1, bias_attr=False,
                              weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, std)))
        self.bn = nn.BatchNorm2D(t_ch)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if x.ndim != 4 or x.shape[1] != self.conv.weight.shape[1]:
            raise ValueError(f"connector expects a [N, {self.conv.weight.shape[1]}, H, W] student feature, "
                             f"got shape {list(x.shape)}; check connector.student_channels and s_key")
        return self.bn(self.conv(x))


def build_connector(cfg: Any) -> Connector:
    """``{student_channels: C_s, teacher_channels: C_t}`` -> :class:`Connector`."""
    if not isinstance(cfg, dict) or set(cfg) != {"student_channels", "teacher_channels"}:
        raise ConfigError(f"connector must be a mapping {{student_channels: <C_s>, teacher_channels: <C_t>}}, "
                          f"got {cfg!r}")
    return Connector(cfg["student_channels"], cfg["teacher_channels"])


@PAIR_BASE_LOSSES.register()
class DistanceLoss(nn.Layer):
    """PaddleClas's ``DistanceLoss``: mean L1, mean squared L2 or smooth-L1 between the two inputs,
    returned as ``{"loss_<mode>": value}`` (so part names end in ``_loss_l2``, as PaddleClas's).

    Args:
        mode: ``l1``, ``l2`` or ``smooth_l1``.
        reduction: ``mean`` or ``sum`` (PaddleClas passes it to Paddle's loss).
        delta: smooth-L1's threshold.
    """

    def __init__(self, mode: str = "l2", reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__()
        if mode not in ("l1", "l2", "smooth_l1"):
            raise ConfigError(f"mode must be l1, l2 or smooth_l1, got {mode!r}")
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction must be 'mean' or 'sum' (a scalar loss is needed), got {reduction!r}")
        if not is_number(delta) or delta <= 0:
            raise ConfigError(f"delta must be a number > 0, got {delta!r}")
        self.mode, self.reduction, self.delta = mode, reduction, float(delta)

    def forward(self, student: paddle.Tensor, teacher: paddle.Tensor) -> Dict[str, paddle.Tensor]:
        return {f"loss_{self.mode}": KF.distance(student, teacher, self.mode, self.reduction, self.delta)}
