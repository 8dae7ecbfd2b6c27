"""Divergences and cross-entropies on logits, in float32, from ``log_softmax``.

Every function takes raw logits ``[N, C]`` and returns a scalar (the mean over rows).
Probabilities are never logged directly: log-probabilities come from ``log_softmax``
(or ``log_sigmoid``) and mixtures from ``logaddexp``, so values and gradients stay
finite for logits as large as +-1e4.
"""
import logging
import math
from typing import Optional, Tuple

import paddle
import paddle.nn.functional as F

from ppssld.utils import device_checks

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)


def as_float32(x: paddle.Tensor) -> paddle.Tensor:
    return x if x.dtype == paddle.float32 else x.astype("float32")


def check_pair(a: paddle.Tensor, b: paddle.Tensor) -> None:
    if a.ndim != 2 or list(a.shape) != list(b.shape):
        raise ValueError(f"expected two logits tensors of the same shape [N, C], got "
                         f"{list(a.shape)} and {list(b.shape)}")


def log_probs(logits: paddle.Tensor, temperature: float = 1.0) -> paddle.Tensor:
    """``log_softmax(logits / T)`` over the last axis, in float32."""
    x = as_float32(logits)
    if temperature != 1.0:
        x = x / float(temperature)
    return F.log_softmax(x, axis=-1)


def kl_rows(logp: paddle.Tensor, logq: paddle.Tensor) -> paddle.Tensor:
    """Per-row ``KL(p || q) = sum_c p (log p - log q)`` from log-probabilities.

    Args:
        logp: log-probabilities of the reference distribution ``p``, ``[N, C]``.
        logq: log-probabilities of ``q``, ``[N, C]``.
    Returns:
        ``[N]`` tensor; a class with ``p == 0`` contributes exactly 0.
    """
    return (paddle.exp(logp) * (logp - logq)).sum(axis=-1)


def js_divergence(student: paddle.Tensor, teacher: paddle.Tensor, temperature: float = 1.0) -> paddle.Tensor:
    """True Jensen-Shannon divergence ``KL(p||m)/2 + KL(q||m)/2``, ``m = (p+q)/2`` (nats).

    Symmetric, ``0 <= JS <= ln 2``, zero iff the two softmaxes are equal.

    Args:
        student: logits ``[N, C]``.
        teacher: logits ``[N, C]``.
        temperature: both logits are divided by it before the softmax (no T^2 factor).
    Returns:
        Scalar: mean over rows.
    """
    check_pair(student, teacher)
    logp = log_probs(student, temperature)
    logq = log_probs(teacher, temperature)
    logm = paddle.logaddexp(logp, logq) - LN2
    return (0.5 * (kl_rows(logp, logm) + kl_rows(logq, logm))).mean()


def symmetric_kl(student: paddle.Tensor, teacher: paddle.Tensor, temperature: float = 1.0) -> paddle.Tensor:
    """``(KL(p||q) + KL(q||p)) / 2`` averaged over rows (exact, no epsilon)."""
    check_pair(student, teacher)
    logp = log_probs(student, temperature)
    logq = log_probs(teacher, temperature)
    return (0.5 * (kl_rows(logp, logq) + kl_rows(logq, logp))).mean()


def kl_divergence(student: paddle.Tensor, teacher: paddle.Tensor, temperature: float = 1.0) -> paddle.Tensor:
    """Hinton KD: ``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged over rows.

    Equals PaddleClas ``KLDivLoss`` (``kl_div(..., reduction='sum') * T^2 / N``).
    """
    check_pair(student, teacher)
    t2 = float(temperature) ** 2
    return kl_rows(log_probs(teacher, temperature), log_probs(student, temperature)).mean() * t2


def soft_target_ce(student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
    """``-sum_c softmax(teacher)_c * log_softmax(student)_c`` averaged over rows."""
    check_pair(student, teacher)
    q = paddle.exp(log_probs(teacher))
    return (-(q * log_probs(student)).sum(axis=-1)).mean()


def _dml_log(x: paddle.Tensor, act: Optional[str], eps: float) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """Return ``(prob, log(prob + eps))`` for PaddleClas's DMLLoss activations."""
    x = as_float32(x)
    if act == "softmax":
        logp = F.log_softmax(x, axis=-1)
    elif act == "sigmoid":
        logp = F.log_sigmoid(x)
    elif act is None:
        return x, paddle.log(x + eps)
    else:
        raise ValueError(f"act must be 'softmax', 'sigmoid' or None, got {act!r}")
    if eps > 0:
        log_eps = paddle.full_like(logp, math.log(eps))
        return paddle.exp(logp), paddle.logaddexp(logp, log_eps)
    return paddle.exp(logp), logp


def paddleclas_dml(student: paddle.Tensor, teacher: paddle.Tensor, act: Optional[str] = "softmax",
                   sum_across_class_dim: bool = False, eps: float = 1e-12,
                   weight: Optional[paddle.Tensor] = None) -> paddle.Tensor:
    """PaddleClas ``DMLLoss`` value, reproduced exactly (with a stable ``log(p + eps)``).

    Per element: ``d = C/2 * [p log((p+eps)/(q+eps)) + q log((q+eps)/(p+eps))]``.
    Reduction: mean over all ``N*C`` elements (the ``C`` factor cancels: this is the
    per-row symmetric KL averaged over rows), or, with ``sum_across_class_dim``, sum over
    classes then mean over rows (``C`` times the symmetric KL).

    Args:
        student, teacher: logits (or probabilities when ``act`` is None), ``[N, C]``.
        act: ``"softmax"``, ``"sigmoid"`` (element-wise) or None.
        sum_across_class_dim: PaddleClas's flag of the same name.
        eps: PaddleClas's epsilon inside the log (1e-12).
        weight: optional ``[N, C]`` element weights (PaddleClas's multi-label ``weight_ratio``); entries
            weighted 0 are excluded from the mean's count as well.
    Returns:
        Scalar.
    """
    check_pair(student, teacher)
    num_classes = student.shape[-1]
    p, logp = _dml_log(student, act, eps)
    q, logq = _dml_log(teacher, act, eps)
    elem = (p * (logp - logq) + q * (logq - logp)) * (num_classes / 2.0)
    if weight is not None:
        elem = elem * weight
        kept = (weight != 0).astype("float32")
        if sum_across_class_dim:
            return elem.sum() / paddle.clip((kept.sum(axis=-1) > 0).astype("float32").sum(), min=1.0)
        return elem.sum() / paddle.clip(kept.sum(), min=1.0)
    return elem.sum(axis=-1).mean() if sum_across_class_dim else elem.mean()


def labeled_mask(labels: paddle.Tensor, num_classes: int) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """Split int labels into a float mask of labeled rows and safe class indices.

    Args:
        labels: int ``[N]`` or ``[N, 1]``; ``-1`` marks an unlabeled row.
        num_classes: C, to reject out-of-range labels.
    Returns:
        ``(mask [N] float32, index [N] int64)`` where unlabeled rows get index 0.
    Raises:
        ValueError: a label outside ``[-1, C)`` or a non-integer label tensor.
    """
    if labels.dtype not in (paddle.int64, paddle.int32):
        raise ValueError(f"hard labels must be an int tensor [N] (-1 = unlabeled), got dtype {labels.dtype}")
    labels = labels.reshape([-1]).astype("int64")
    bad = (labels < -1) | (labels >= num_classes)
    if device_checks.deferring():  # inside the training loop: read at its print step, no host sync here
        device_checks.check(f"labels outside [-1, {num_classes})", bad, ValueError(
            f"labels must lie in [-1, {num_classes}) (-1 = unlabeled); a batch held other values"))
    elif labels.shape[0] > 0 and bool(bad.any()):
        values = sorted(set(labels.numpy().tolist()))
        raise ValueError(f"labels must lie in [-1, {num_classes}) (-1 = unlabeled); got values {values[:10]}")
    valid = (labels >= 0) & ~bad
    mask = valid.astype("float32")
    index = paddle.where(valid, labels, paddle.zeros_like(labels))
    return mask, index


def hard_label_ce(logits: paddle.Tensor, labels: paddle.Tensor, epsilon: Optional[float] = None,
                  reduction: str = "mean") -> paddle.Tensor:
    """Cross-entropy with integer labels, optional label smoothing; ``-1`` rows are skipped.

    With smoothing the target is ``(1 - eps) * one_hot + eps / C``.

    Args:
        logits: ``[N, C]``.
        labels: int ``[N]`` or ``[N, 1]``; ``-1`` = unlabeled (excluded).
        epsilon: smoothing in ``(0, 1)`` or None.
        reduction: ``"mean"`` over labeled rows (exactly 0 if there are none) or ``"sum"``.
    Returns:
        Scalar.
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits [N, C], got shape {list(logits.shape)}")
    if labels.reshape([-1]).shape[0] != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits but {labels.reshape([-1]).shape[0]} labels")
    num_classes = logits.shape[-1]
    mask, index = labeled_mask(labels, num_classes)
    logp = log_probs(logits)
    picked = paddle.take_along_axis(logp, index.unsqueeze(-1), axis=-1).squeeze(-1)
    if epsilon:
        rows = -(1.0 - epsilon) * picked - epsilon * logp.mean(axis=-1)
    else:
        rows = -picked
    total = paddle.where(mask > 0, rows, paddle.zeros_like(rows)).sum()
    if reduction == "sum":
        return total
    return total / paddle.clip(mask.sum(), min=1.0)
