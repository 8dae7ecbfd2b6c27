"""The cross-entropy on the mixed targets of a batch operator (Mixup / Cutmix; ``MixedLabels`` lives in
:mod:`ppssld.data.batch.mixed_labels`, beside the operators that make it).

A mixed batch row ``i`` is ``lam[i] * image[i] + (1 - lam[i]) * image[perm[i]]`` (Cutmix: a pasted
box whose area share is ``1 - lam[i]``). Its target is the pair of labels ``(a, b)`` weighted by
``lam``: the hard loss of the row is ``lam * CE(a) + (1 - lam) * CE(b)``, PaddleClas's ``MixCELoss``
(equal to cross-entropy against the mixed one-hot target; with label smoothing each one-hot is
smoothed, which is the same as smoothing the mixed target).

Unlabeled images (label -1): a row whose two source images are not both labelled is left out of
the hard loss (a row with ``lam == 1`` needs only ``a``, one with ``lam == 0`` only ``b``); it still
counts in every soft (teacher-student) loss, which never reads labels. The mean is over the rows
kept (exactly 0 when none is kept).
"""
import logging
from typing import Optional

import paddle

from ppssld.data.batch.mixed_labels import MixedLabels
from ppssld.loss.functional import labeled_mask, log_probs

logger = logging.getLogger(__name__)


def _row_ce(logp: paddle.Tensor, labels: paddle.Tensor, epsilon: Optional[float]) -> paddle.Tensor:
    _, index = labeled_mask(labels, logp.shape[-1])
    picked = paddle.take_along_axis(logp, index.unsqueeze(-1), axis=-1).squeeze(-1)
    if epsilon:
        return -(1.0 - epsilon) * picked - epsilon * logp.mean(axis=-1)
    return -picked


def mixed_label_ce(logits: paddle.Tensor, labels: MixedLabels, epsilon: Optional[float] = None,
                   reduction: str = "mean") -> paddle.Tensor:
    """``lam * CE(a) + (1 - lam) * CE(b)`` per row, over the rows :meth:`MixedLabels.kept_rows` keeps.

    Args:
        logits: ``[N, C]``.
        labels: the batch's mixed labels.
        epsilon: label smoothing in ``(0, 1)`` or None (``(1 - eps) * one_hot + eps / C`` per label).
        reduction: ``"mean"`` over kept rows (0 if none) or ``"sum"``.
    Returns:
        Scalar.
    """
    if logits.ndim != 2 or logits.shape[0] != labels.a.shape[0]:
        raise ValueError(f"expected logits [N, C] for {labels.a.shape[0]} mixed labels, got {list(logits.shape)}")
    logp = log_probs(logits)
    lam = labels.lam.astype("float32")
    rows = lam * _row_ce(logp, labels.a, epsilon) + (1.0 - lam) * _row_ce(logp, labels.b, epsilon)
    keep = labels.kept_rows()
    total = paddle.where(keep > 0, rows, paddle.zeros_like(rows)).sum()
    if reduction == "sum":
        return total
    return total / paddle.clip(keep.sum(), min=1.0)
