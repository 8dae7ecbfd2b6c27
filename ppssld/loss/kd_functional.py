"""Maths of PaddleClas's further logit distillation losses (DKD, DIST, WSL, SKD, distances, RKD).

Every function takes float logits (or features) and returns a scalar. Label-dependent
functions take ``target`` (int64 ``[N]``, every entry a valid class) and ``mask`` (float32
``[N]``, 1 for the rows that count); their value is the mean over the rows that count
(exactly 0 when none does). Log-probabilities come from ``log_softmax``/``logsumexp``, never
from the log of a probability, so saturated logits give finite values and gradients where
PaddleClas's ``log(softmax)`` would give ``-inf``; on ordinary logits the values agree.
"""
import logging
from typing import Optional

import paddle
import paddle.nn.functional as F

from ppssld.loss.functional import check_pair, as_float32, log_probs

logger = logging.getLogger(__name__)

# Added below a row's smallest logit to push one class out of a softmax: exp(-1000) is 0 in float32.
_PUSH_OUT = 1000.0


def _masked_mean(rows: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
    """Mean of ``rows`` over the rows where ``mask`` is 1 (0 when there are none)."""
    return (rows * mask).sum() / paddle.clip(mask.sum(), min=1.0)


def _one_hot(target: paddle.Tensor, num_classes: int) -> paddle.Tensor:
    return F.one_hot(target.reshape([-1]), num_classes).astype("float32")


def _push_out(x: paddle.Tensor, onehot: paddle.Tensor) -> paddle.Tensor:
    """``x`` with the one-hot class set far below the row's other entries."""
    low = x.min(axis=-1, keepdim=True) - _PUSH_OUT
    return paddle.where(onehot > 0, low.expand_as(x), x)


def _row_kl(logp: paddle.Tensor, logq: paddle.Tensor) -> paddle.Tensor:
    return (paddle.exp(logp) * (logp - logq)).sum(axis=-1)


def dkd(student: paddle.Tensor, teacher: paddle.Tensor, target: paddle.Tensor, mask: paddle.Tensor,
        alpha: float = 1.0, beta: float = 1.0, temperature: float = 1.0) -> paddle.Tensor:
    """Decoupled KD: ``T^2 * (alpha * TCKD + beta * NCKD)``, mean over counted rows.

    TCKD is the KL between the binary (target, rest) distributions of teacher and student;
    NCKD the KL between their softmaxes over the non-target classes only (PaddleClas
    ``DKDLoss``, Zhao et al. 2022).
    """
    check_pair(student, teacher)
    if student.shape[-1] < 2:
        raise ValueError("DKD needs at least 2 classes (it splits the target class from the others)")
    onehot = _one_hot(target, student.shape[-1])
    logp_s, logp_t = log_probs(student, temperature), log_probs(teacher, temperature)

    def binary(logp: paddle.Tensor) -> paddle.Tensor:
        gt = (logp * onehot).sum(axis=-1, keepdim=True)
        rest = paddle.logsumexp(_push_out(logp, onehot), axis=-1, keepdim=True)
        return paddle.concat([gt, rest], axis=-1)

    tckd = _row_kl(binary(logp_t), binary(logp_s))
    nt_s = F.log_softmax(_push_out(as_float32(student) / temperature, onehot), axis=-1)
    nt_t = F.log_softmax(_push_out(as_float32(teacher) / temperature, onehot), axis=-1)
    nckd = _row_kl(nt_t, nt_s)
    return _masked_mean(alpha * tckd + beta * nckd, mask) * float(temperature) ** 2


def _pearson_rows(a: paddle.Tensor, b: paddle.Tensor, eps: float = 1e-8) -> paddle.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (PaddleClas's eps)."""
    a = a - a.mean(axis=1, keepdim=True)
    b = b - b.mean(axis=1, keepdim=True)
    return (a * b).sum(axis=1) / (paddle.linalg.norm(a, axis=1) * paddle.linalg.norm(b, axis=1) + eps)


def dist(student: paddle.Tensor, teacher: paddle.Tensor, beta: float = 1.0, gamma: float = 1.0) -> paddle.Tensor:
    """DIST: ``beta * (1 - inter) + gamma * (1 - intra)`` on the softmaxes (Huang et al. 2022).

    ``inter`` is the mean over samples of the Pearson correlation between the two class
    distributions; ``intra`` the mean over classes of the correlation across the batch.
    """
    check_pair(student, teacher)
    p_s, p_t = paddle.exp(log_probs(student)), paddle.exp(log_probs(teacher))
    inter = 1.0 - _pearson_rows(p_s, p_t).mean()
    intra = 1.0 - _pearson_rows(p_s.t(), p_t.t()).mean()
    return beta * inter + gamma * intra


def _soft_ce_rows(student: paddle.Tensor, teacher: paddle.Tensor, temperature: float) -> paddle.Tensor:
    return -(paddle.exp(log_probs(teacher, temperature)) * log_probs(student, temperature)).sum(axis=-1)


def wsl(student: paddle.Tensor, teacher: paddle.Tensor, target: paddle.Tensor, mask: paddle.Tensor,
        temperature: float = 2.0) -> paddle.Tensor:
    """Weighted soft labels: ``T^2 * mean(w * CE(softmax(t/T), softmax(s/T)))`` (Zhou et al. 2021).

    ``w = 1 - exp(-max(CE_s / (CE_t + 1e-7), 0))`` from the hard-label cross-entropies of
    the student and the teacher (no gradient through ``w``).
    """
    check_pair(student, teacher)
    onehot = _one_hot(target, student.shape[-1])
    ce_s = -(log_probs(student.detach()) * onehot).sum(axis=-1)
    ce_t = -(log_probs(teacher.detach()) * onehot).sum(axis=-1)
    ratio = paddle.clip(ce_s / (ce_t + 1e-7), min=0.0)
    weight = 1.0 - paddle.exp(-ratio)
    return _masked_mean(_soft_ce_rows(student, teacher, temperature) * weight, mask) * float(temperature) ** 2


def _sphere(x: paddle.Tensor, multiplier: float) -> paddle.Tensor:
    """Each row standardised (zero mean, unit variance, eps 1e-7) and scaled by ``multiplier``."""
    x = as_float32(x)
    mean = x.mean(axis=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdim=True)
    return (x - mean) / paddle.sqrt(var + 1e-7) * multiplier


def skd(student: paddle.Tensor, teacher: paddle.Tensor, target: paddle.Tensor, mask: paddle.Tensor,
        temperature: float = 1.0, multiplier: float = 2.0, alpha: float = 0.9) -> paddle.Tensor:
    """Spherical KD: ``alpha * T^2 * soft CE + (1 - alpha) * hard CE`` on sphere-normalised logits.

    The soft part uses every row; the hard part only the counted rows (Guo et al. 2020).
    """
    check_pair(student, teacher)
    s, t = _sphere(student, multiplier), _sphere(teacher, multiplier)
    kd = _soft_ce_rows(s, t, temperature).mean() * float(temperature) ** 2
    onehot = _one_hot(target, student.shape[-1])
    ce = _masked_mean(-(F.log_softmax(s, axis=-1) * onehot).sum(axis=-1), mask)
    return alpha * kd + (1.0 - alpha) * ce


def distance(a: paddle.Tensor, b: paddle.Tensor, mode: str = "l2", reduction: str = "mean",
             delta: float = 1.0) -> paddle.Tensor:
    """Element-wise L1, squared L2 or smooth-L1 (Huber, ``delta``) between two same-shaped tensors."""
    if list(a.shape) != list(b.shape):
        raise ValueError(f"distance between tensors of different shapes {list(a.shape)} and {list(b.shape)}")
    diff = as_float32(a) - as_float32(b)
    if mode == "l1":
        elem = diff.abs()
    elif mode == "l2":
        elem = diff * diff
    elif mode == "smooth_l1":
        ad = diff.abs()
        elem = paddle.where(ad < delta, 0.5 * diff * diff, delta * (ad - 0.5 * delta))
    else:
        raise ValueError(f"mode must be l1, l2 or smooth_l1, got {mode!r}")
    return elem.sum() if reduction == "sum" else elem.mean()


def _flatten_pooled(x: paddle.Tensor, target_size: Optional[int]) -> paddle.Tensor:
    x = as_float32(x)
    if target_size is not None and x.ndim == 4:
        x = F.adaptive_avg_pool2d(x, target_size)
    return x.reshape([x.shape[0], -1])


def _pairwise_distance(e: paddle.Tensor, eps: float = 1e-12) -> paddle.Tensor:
    """Euclidean distances ``[N, N]``; squared distances clipped at ``eps`` first (PaddleClas)."""
    sq = (e * e).sum(axis=1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * paddle.matmul(e, e, transpose_y=True)
    return paddle.sqrt(paddle.clip(d2, min=eps))


def _smooth_l1_mean(a: paddle.Tensor, b: paddle.Tensor) -> paddle.Tensor:
    return distance(a, b, "smooth_l1", "mean", 1.0)


def rkd_distance(student: paddle.Tensor, teacher: paddle.Tensor, target_size: Optional[int] = None,
                 eps: float = 1e-12) -> paddle.Tensor:
    """RKD distance term: smooth-L1 between the mean-normalised pairwise distance matrices."""
    s, t = _flatten_pooled(student, target_size), _flatten_pooled(teacher, target_size)
    d_t = _pairwise_distance(t)
    d_t = d_t / (d_t.mean() + eps)
    d_s = _pairwise_distance(s)
    d_s = d_s / (d_s.mean() + eps)
    return _smooth_l1_mean(d_s, d_t)


def rkd_angle(student: paddle.Tensor, teacher: paddle.Tensor, target_size: Optional[int] = None) -> paddle.Tensor:
    """RKD angle term: smooth-L1 between the cosines of every triple's angle (Park et al. 2019)."""
    s, t = _flatten_pooled(student, target_size), _flatten_pooled(teacher, target_size)

    def angles(e: paddle.Tensor) -> paddle.Tensor:
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, axis=2)
        return paddle.bmm(diff, diff.transpose([0, 2, 1])).reshape([-1])

    return _smooth_l1_mean(angles(s), angles(t))
