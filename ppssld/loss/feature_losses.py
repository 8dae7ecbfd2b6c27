"""Feature-level distillation: PaddleClas's ``DistillationPairLoss`` and its trainable base losses.

``DistillationPairLoss`` picks an intermediate output of each model (``s_key`` / ``t_key``,
outputs named by ``return_patterns``) and hands the pair to ``base_loss_name``:

* ``MGDLoss`` (masked generative distillation): a random channel mask on the student's
  feature, a 3x3 conv - ReLU - 3x3 conv generator, MSE to the teacher's feature, times
  ``alpha_mgd``; a 1x1 conv connector aligns channels when they differ.
* ``PEFDLoss`` (projector ensemble): the mean of ``num_projectors`` Linear-ReLU projections
  of the student's feature, ``mean(1 - cos)`` to the teacher's.
* ``DistanceLoss`` (L1 / L2 / smooth-L1), with an optional trainable ``connector``
  (:mod:`ppssld.loss.connector`).

These layers hold parameters: they are sublayers of the combined loss, so the trainer hands
them to the optimizer and writes them into checkpoints (keys ``loss_func.<i>.loss_func.*``,
as PaddleClas names them); export never builds the loss, so the ``_ssld`` model lacks them.
"""
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppssld.loss.connector import build_connector
from ppssld.loss.functional import as_float32
from ppssld.loss.losses import Outputs, PairLoss, select_output
from ppssld.utils.checks import is_int, is_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import LOSSES, PAIR_BASE_LOSSES

logger = logging.getLogger(__name__)


def _channels(value: Any, what: str) -> int:
    if not is_int(value) or value < 1:
        raise ConfigError(f"{what} must be a positive integer (a feature's channel count), got {value!r}")
    return value


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv2D:
    """A conv with PaddleClas's Kaiming-normal (fan_out, ReLU gain) weights and zero bias."""
    std = math.sqrt(2.0) / math.sqrt(c_out * k * k)
    return nn.Conv2D(c_in, c_out, k, padding=k // 2,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, std)),
                     bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))


def _check_features(s: paddle.Tensor, t: paddle.Tensor, ndim: int, who: str) -> None:
    if s.ndim != ndim or t.ndim != ndim:
        raise ValueError(f"{who} needs {ndim}-D features, got shapes {list(s.shape)} and {list(t.shape)}")


@PAIR_BASE_LOSSES.register()
class MGDLoss(nn.Layer):
    """Masked generative distillation (Yang et al. 2022), as PaddleClas's ``MGDLoss``.

    Args:
        student_channels / teacher_channels: feature channels (a 1x1 conv connector when different).
        alpha_mgd: loss multiplier.
        lambda_mgd: probability that a channel of the student's feature is masked.
    """

    def __init__(self, student_channels: int, teacher_channels: int, alpha_mgd: float = 1.756,
                 lambda_mgd: float = 0.15) -> None:
        super().__init__()
        s_ch = _channels(student_channels, "student_channels")
        t_ch = _channels(teacher_channels, "teacher_channels")
        if not is_number(lambda_mgd) or not 0 <= lambda_mgd < 1:
            raise ConfigError(f"lambda_mgd must be a masking probability in [0, 1), got {lambda_mgd!r}")
        self.alpha_mgd, self.lambda_mgd = float(alpha_mgd), float(lambda_mgd)
        self.align = _conv(s_ch, t_ch, 1) if s_ch != t_ch else None
        self.generation = nn.Sequential(_conv(t_ch, t_ch, 3), nn.ReLU(), _conv(t_ch, t_ch, 3))

    def forward(self, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
        _check_features(student, teacher, 4, "MGDLoss")
        if list(student.shape[-2:]) != list(teacher.shape[-2:]):
            raise ValueError(f"MGDLoss needs features of the same spatial size, got {list(student.shape)} and "
                             f"{list(teacher.shape)}; pick other return_patterns")
        student, teacher = as_float32(student), as_float32(teacher)  # AMP: the loss runs in float32
        if self.align is not None:
            student = self.align(student)
        n, c = teacher.shape[0], teacher.shape[1]
        keep = (paddle.rand([n, c, 1, 1]) >= self.lambda_mgd).astype(student.dtype)
        generated = self.generation(student * keep)
        return F.mse_loss(generated, teacher) * self.alpha_mgd


@PAIR_BASE_LOSSES.register()
class PEFDLoss(nn.Layer):
    """Projector-ensemble feature distillation (Chen et al. 2022), as PaddleClas's ``PEFDLoss``.

    Args:
        student_channel / teacher_channel: feature sizes (after flattening or pooling).
        num_projectors: how many Linear-ReLU projectors are averaged.
        mode: ``flatten`` (features flattened) or ``gap`` (global average pooling first).
    """

    def __init__(self, student_channel: int, teacher_channel: int, num_projectors: int = 3,
                 mode: str = "flatten") -> None:
        super().__init__()
        s_ch = _channels(student_channel, "student_channel")
        t_ch = _channels(teacher_channel, "teacher_channel")
        count = _channels(num_projectors, "num_projectors")
        if mode not in ("flatten", "gap"):
            raise ConfigError(f"mode must be 'flatten' or 'gap', got {mode!r}")
        self.mode = mode
        self.projectors = nn.LayerList([nn.Linear(s_ch, t_ch) for _ in range(count)])

    def forward(self, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
        student, teacher = as_float32(student), as_float32(teacher)  # AMP: the loss runs in float32
        if self.mode == "gap":
            _check_features(student, teacher, 4, "PEFDLoss(mode=gap)")
            student, teacher = F.adaptive_avg_pool2d(student, 1), F.adaptive_avg_pool2d(teacher, 1)
        student, teacher = student.flatten(1), teacher.flatten(1)
        projected = paddle.add_n([F.relu(p(student)) for p in self.projectors]) / len(self.projectors)
        cos = (F.normalize(projected, axis=1) * F.normalize(teacher, axis=1)).sum(axis=1)
        return (1.0 - cos).mean()


def _feature_key(value: Any, what: str) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{what} must be one output key (a return_patterns entry) or null for the logits, "
                          f"got {value!r}")
    return value


@LOSSES.register()
class DistillationPairLoss(PairLoss):
    """A base loss applied to ``(student[s_key], teacher[t_key])``, PaddleClas's ``DistillationPairLoss``.

    Parts are named ``<name>_<i>_<Student>_<Teacher>`` as in PaddleClas.

    Args:
        base_loss_name: ``MGDLoss``, ``PEFDLoss`` or ``DistanceLoss``.
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        s_key / t_key: the outputs compared (``return_patterns`` entries; null: the logits).
        name: part-name prefix.
        connector: ``{student_channels, teacher_channels}``: a trainable 1x1 conv + BN applied to
            the student's feature first (:mod:`ppssld.loss.connector`; not in PaddleClas).
        **kwargs: the base loss's parameters (checked against it).
    """

    def __init__(self, base_loss_name: str, weight: float = 1.0,
                 model_name_pairs: Optional[Sequence[Sequence[str]]] = None, s_key: Optional[str] = None,
                 t_key: Optional[str] = None, name: str = "loss", connector: Optional[Dict[str, Any]] = None,
                 **kwargs: Any) -> None:
        super().__init__(weight, model_name_pairs, None)
        self.connector = build_connector(connector) if connector is not None else None
        where = f"base_loss_name {base_loss_name!r}"
        PAIR_BASE_LOSSES.check_kwargs(base_loss_name, kwargs, where)
        self.loss_func = PAIR_BASE_LOSSES.build(base_loss_name, kwargs, where)
        self.s_key = _feature_key(s_key, "s_key")
        self.t_key = _feature_key(t_key, "t_key")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty part-name prefix, got {name!r}")
        self.name = name

    def logit_pairs(self) -> List[Tuple[str, str]]:
        """Every pair when both sides are the logits (no ``s_key``/``t_key``) and no connector reshapes them."""
        plain = self.s_key is None and self.t_key is None and self.connector is None
        return [(a, b) for a, b in self.model_name_pairs] if plain else []

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        parts = {}
        for i, (first, second) in enumerate(self.model_name_pairs):
            s = select_output(outputs, first, self.s_key, self.where)
            t = select_output(outputs, second, self.t_key, self.where)
            if self.connector is not None:
                s = self.connector(as_float32(s))
            value = self.loss_func(s, t)
            if isinstance(value, dict):  # PaddleClas: a dict-returning base loss gives one part per entry
                parts.update({f"{self.name}_{i}_{first}_{second}_{k}": v for k, v in value.items()})
            else:
                parts[f"{self.name}_{i}_{first}_{second}"] = value
        return parts

