"""Multi-label losses: PaddleClas ``MultiLabelLoss`` and ``DistillationMultiLabelLoss`` (sigmoid BCE).

Labels are float ``[N, C]`` (1 present, 0 absent, -1 unknown), or ``[N, 2, C]`` when the dataset
sets ``label_ratio`` (labels, then each class's positive fraction). Unknown entries are excluded
explicitly: they add nothing to the sum and are not counted in the mean; a row whose entries are
all unknown (an unlabeled image) is excluded from the row mean of ``size_sum``. PaddleClas gets the
same values when no entry is -1 (it only masks them with ``weight_ratio``).

Options as PaddleClas: ``epsilon`` smooths targets to ``(1 - eps) * y + eps / C``; ``weight_ratio``
weights each entry by ``exp(1 - r)`` for positives and ``exp(r)`` for negatives (``r`` the class's
positive ratio); ``size_sum`` sums over classes then averages over rows, else the mean over entries.
"""
import logging
from typing import Dict, Optional, Sequence, Tuple

import paddle
import paddle.nn.functional as F

from ppssld.arch.roles import LOGITS, student_output_name
from ppssld.loss.losses import (ConfigLoss, DEFAULT_GT_MODELS, Outputs, check_epsilon, require_labels,
                                check_model_names, select_output)
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import LOSSES

logger = logging.getLogger(__name__)


def split_multilabel(labels: paddle.Tensor, num_classes: int,
                     need_ratio: bool) -> Tuple[paddle.Tensor, Optional[paddle.Tensor]]:
    """``(targets [N, C] float32, ratio [N, C] or None)`` from a multi-label batch.

    Raises:
        ValueError: labels of another shape (e.g. single-label class indices), naming what is expected.
    """
    shape = list(labels.shape)
    if len(shape) == 3 and shape[1] == 2 and shape[2] == num_classes:
        targets, ratio = labels[:, 0, :], labels[:, 1, :]
    elif len(shape) == 2 and shape[1] == num_classes:
        targets, ratio = labels, None
    else:
        raise ValueError(f"multi-label loss expects labels [N, {num_classes}] (or [N, 2, {num_classes}] with "
                         f"label_ratio) for {num_classes} outputs, got shape {shape}; use MultiLabelDataset")
    if need_ratio and ratio is None:
        raise ValueError("weight_ratio: True needs the class ratios: set label_ratio: True on the MultiLabelDataset")
    return targets.astype("float32"), None if ratio is None else ratio.astype("float32")


def ratio_weight(labels: paddle.Tensor, num_classes: int) -> paddle.Tensor:
    """PaddleClas's ``weight_ratio`` element weights ``[N, C]``: ``exp(1 - r)`` for a positive, ``exp(r)`` for a
    negative, 0 for an unknown (-1) entry; ``labels`` is ``[N, 2, C]`` (labels, ratios)."""
    targets, ratio = split_multilabel(labels, num_classes, True)
    positive = (targets > 0.5).astype("float32")
    known = (targets > -0.5).astype("float32")
    return paddle.exp(positive * (1.0 - ratio) + (1.0 - positive) * ratio) * known


def multilabel_bce(logits: paddle.Tensor, labels: paddle.Tensor, epsilon: Optional[float] = None,
                   size_sum: bool = False, weight_ratio: bool = False) -> paddle.Tensor:
    """PaddleClas's multi-label BCE with unknown (-1) entries excluded (see the module docstring).

    Args:
        logits: ``[N, C]``.
        labels: ``[N, C]`` or ``[N, 2, C]`` (with ratios).
        epsilon: target smoothing in (0, 1) or None.
        size_sum: sum over classes, mean over rows with a known entry.
        weight_ratio: PaddleClas's positive/negative weighting by class ratio.
    Returns:
        Scalar (exactly 0, still connected to ``logits``, when no entry is known).
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits [N, C], got shape {list(logits.shape)}")
    num_classes = logits.shape[-1]
    targets, ratio = split_multilabel(labels, num_classes, weight_ratio)
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits but {targets.shape[0]} label rows")
    known = (targets > -0.5).astype("float32")
    y = paddle.clip(targets, min=0.0)
    positive = (y > 0.5).astype("float32")
    if epsilon:
        y = (1.0 - epsilon) * y + epsilon / num_classes
    x = logits.astype("float32")
    cost = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    if weight_ratio:
        cost = cost * paddle.exp(positive * (1.0 - ratio) + (1.0 - positive) * ratio)
    cost = cost * known  # unknown entries: excluded from the sum and from the counts below
    if size_sum:
        rows = (known.sum(axis=1) > 0).astype("float32")
        return cost.sum() / paddle.clip(rows.sum(), min=1.0)
    return cost.sum() / paddle.clip(known.sum(), min=1.0)


class _MultiLabelBase(ConfigLoss):
    def __init__(self, weight: float = 1.0, epsilon: Optional[float] = None, size_sum: bool = False,
                 weight_ratio: bool = False, key: Optional[str] = None) -> None:
        super().__init__(weight, key)
        self.epsilon = check_epsilon(epsilon)
        self.size_sum = bool(size_sum)
        self.weight_ratio = bool(weight_ratio)

    def value(self, logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        try:
            return multilabel_bce(logits, labels, self.epsilon, self.size_sum, self.weight_ratio)
        except ValueError as exc:
            raise ConfigError(f"{self.where or self.config_name}: {exc}") from exc


@LOSSES.register()
class MultiLabelLoss(_MultiLabelBase):
    """Sigmoid BCE on a plain model's logits (or ``logits`` / ``Student`` / the only entry of a dict).

    Args:
        weight: multiplier in the total loss.
        epsilon: target smoothing in (0, 1), or null.
        size_sum: sum over classes, then mean over rows (PaddleClas PULC attribute configs).
        weight_ratio: weight entries by class ratio (needs ``label_ratio: True`` on the dataset).
        key: pick ``output[key]`` when a model returns a dict.
    """

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        labels = require_labels(labels, self.where or self.config_name)
        if isinstance(outputs, dict):
            name = student_output_name(outputs)
            if name is None:
                raise ConfigError(f"{self.where or self.config_name}: outputs of several models {sorted(outputs)}; "
                                  f"use DistillationMultiLabelLoss with model_names")
            outputs = select_output(outputs, name, self.key, self.where) if name != LOGITS else outputs[LOGITS]
        return {self.config_name: self.value(outputs, labels)}


@LOSSES.register()
class DistillationMultiLabelLoss(_MultiLabelBase):
    """:class:`MultiLabelLoss` for each named model of a DistillationModel (parts ``<Name>_<Model>``).

    Args:
        model_names: models to supervise (default ``[Student]``).
        name: PaddleClas's part-name argument; accepted, parts follow ppssld's naming.
        others: as :class:`MultiLabelLoss`.
    """

    def __init__(self, weight: float = 1.0, model_names: Optional[Sequence[str]] = None,
                 epsilon: Optional[float] = None, size_sum: bool = False, weight_ratio: bool = False,
                 key: Optional[str] = None, name: Optional[str] = None) -> None:
        super().__init__(weight, epsilon, size_sum, weight_ratio, key)
        self.model_names = check_model_names(DEFAULT_GT_MODELS if model_names is None else model_names)

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        labels = require_labels(labels, self.where or self.config_name)
        return {f"{self.config_name}_{name}": self.value(select_output(outputs, name, self.key, self.where), labels)
                for name in self.model_names}
