"""Accumulating top-k accuracy (PaddleClas ``TopkAcc`` / ``DistillationTopkAcc``), registered in METRICS.

A metric keeps integer counts (correct per k, labeled samples) so that ranks can sum
them: ``counts()`` -> all-reduce -> ``set_counts()`` -> ``summary()``.

Conventions:

* rows labelled ``-1`` (unlabeled) are ignored entirely;
* ties count against the sample: it is correct at k when fewer than k *other* classes
  score greater than *or equal to* its true class (so constant logits score 0, not 100%);
  a NaN true-class score is always wrong;
* ``k`` larger than the class count C is clipped to C (top-C is always right); the key
  keeps the configured ``k``.
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import paddle

from ppssld.utils.checks import is_int
from ppssld.arch.roles import student_output_name
from ppssld.utils import device_checks
from ppssld.utils.errors import ConfigError, did_you_mean
from ppssld.utils.registry import METRICS

logger = logging.getLogger(__name__)

Outputs = Union[paddle.Tensor, Dict[str, Any]]


def _check_topk(topk: Any) -> List[int]:
    if is_int(topk):
        topk = [topk]
    if not isinstance(topk, (list, tuple)) or not topk or not all(
            is_int(k) and k >= 1 for k in topk):
        raise ConfigError(f"topk must be a positive int or a non-empty list of them, e.g. [1, 5], got {topk!r}")
    unique = list(dict.fromkeys(topk))
    if len(unique) != len(topk):
        logger.warning("topk %s has repeated values; using %s", list(topk), unique)
    return unique


def correct_counts(logits: paddle.Tensor, labels: paddle.Tensor, topk: Sequence[int]) -> np.ndarray:
    """Counts for one batch: ``[correct@k for k in topk] + [labeled rows]`` (int64), read to the host.

    Args:
        logits: ``[N, C]`` scores.
        labels: int ``[N]`` or ``[N, 1]``; ``-1`` = unlabeled (skipped).
        topk: the k values.
    Returns:
        ``np.ndarray`` of shape ``[len(topk) + 1]``.
    """
    return batch_counts(logits, labels, topk).numpy()


def batch_counts(logits: paddle.Tensor, labels: paddle.Tensor, topk: Sequence[int]) -> paddle.Tensor:
    """:func:`correct_counts` left on the device (int64 tensor): no host read, except for the label range
    check outside a training loop (see :mod:`ppssld.utils.device_checks`)."""
    if logits.ndim != 2:
        raise ValueError(f"expected logits [N, C], got shape {list(logits.shape)}")
    labels = labels.reshape([-1]).astype("int64")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits but {labels.shape[0]} labels")
    num_classes = logits.shape[1]
    bad = (labels < -1) | (labels >= num_classes)
    if labels.shape[0]:
        device_checks.check(f"metric labels outside [-1, {num_classes})", bad,
                            ValueError(f"labels must lie in [-1, {num_classes}) (-1 = unlabeled)"))
    keep = (labels >= 0) & ~bad
    scores = logits.astype("float32")
    safe = paddle.where(keep, labels, paddle.zeros_like(labels))
    true_score = paddle.take_along_axis(scores, safe.unsqueeze(-1), axis=-1)
    # classes (other than the true one) scoring >= the true class
    rank = (scores >= true_score).astype("int64").sum(axis=-1) - 1
    valid = keep & ~paddle.isnan(true_score.squeeze(-1))
    out = [((rank < min(k, num_classes)) & valid).astype("int64").sum() for k in topk]
    out.append(keep.astype("int64").sum())
    return paddle.stack(out)


@METRICS.register()
class TopkAcc:
    """Top-k accuracy over all batches since :meth:`reset`.

    With dict outputs it reads ``logits`` if present, else ``Student`` if present, else
    the only entry (several entries and neither key: error; use DistillationTopkAcc); a chosen
    entry that is itself a dict (``return_patterns``) gives its ``logits``, as PaddleClas.

    Args:
        topk: k values; ``summary()`` keys are ``top{k}``.
    """

    def __init__(self, topk: Union[int, Sequence[int]] = (1, 5)) -> None:
        self.topk = _check_topk(topk)
        self._counts = np.zeros(len(self.topk) + 1, dtype=np.int64)
        self._pending: Optional[paddle.Tensor] = None
        self._warned = False

    def reset(self) -> None:
        """Forget every accumulated count."""
        self._counts = np.zeros(len(self.topk) + 1, dtype=np.int64)
        self._pending = None

    def select(self, outputs: Outputs) -> paddle.Tensor:
        """The logits this metric scores."""
        if not isinstance(outputs, dict):
            return outputs
        name = student_output_name(outputs)
        if name is not None:
            return self.select(outputs[name])  # a Student with return_patterns: its own "logits"
        raise ConfigError(f"TopkAcc got outputs of several models {sorted(outputs)}; use "
                          f"DistillationTopkAcc with model_key")

    def update(self, outputs: Outputs, labels: paddle.Tensor) -> Dict[str, float]:
        """Add one batch.

        Args:
            outputs: logits ``[N, C]`` or a dict of model outputs.
            labels: int ``[N]`` or ``[N, 1]``, ``-1`` = unlabeled.
        Returns:
            This batch's accuracies ``{top{k}: float}`` (0.0 when it has no labeled row).
        """
        logits = self.select(outputs)
        self._warn_clipped(logits)
        batch = correct_counts(logits, labels, self.topk)
        self._counts += batch
        return self._summarise(batch)

    def _warn_clipped(self, logits: paddle.Tensor) -> None:
        if max(self.topk) > logits.shape[-1] and not self._warned:
            logger.warning("top-k with k=%d > %d classes is clipped to %d (always correct)",
                           max(self.topk), logits.shape[-1], logits.shape[-1])
            self._warned = True

    def accumulate(self, outputs: Outputs, labels: paddle.Tensor) -> None:
        """Add one batch on the device, reading nothing to the host (the training and eval loops call this;
        :meth:`counts` reads the total)."""
        logits = self.select(outputs)
        self._warn_clipped(logits)
        batch = batch_counts(logits, labels, self.topk)
        self._pending = batch if self._pending is None else self._pending + batch

    def counts(self) -> np.ndarray:
        """Accumulated ``[correct@k..., labeled]`` (a copy, int64), for all-reduce: folds in (one host read)
        what :meth:`accumulate` left on the device."""
        if self._pending is not None:
            self._counts = self._counts + self._pending.numpy()
            self._pending = None
        return self._counts.copy()

    def set_counts(self, counts: Any) -> None:
        """Replace the accumulated counts (e.g. with their sum over ranks)."""
        arr = np.asarray(counts)
        if arr.shape != self._counts.shape:
            raise ValueError(f"expected counts of shape {self._counts.shape}, got {arr.shape}")
        self._counts = np.rint(arr).astype(np.int64)
        self._pending = None

    def _summarise(self, counts: np.ndarray) -> Dict[str, float]:
        total = int(counts[-1])
        return {f"top{k}": (float(c) / total if total else 0.0) for k, c in zip(self.topk, counts[:-1])}

    def summary(self) -> Dict[str, float]:
        """``{top{k}: accuracy}`` over labeled samples; 0.0 when none was seen."""
        return self._summarise(self.counts())


@METRICS.register()
class DistillationTopkAcc(TopkAcc):
    """Top-k accuracy of one named model of a DistillationModel.

    Args:
        model_key: the model to score (default ``Student``).
        feature_key: pick ``output[feature_key]`` when that model returns a dict.
        topk: k values.
    """

    def __init__(self, model_key: str = "Student", feature_key: Optional[str] = None,
                 topk: Union[int, Sequence[int]] = (1, 5)) -> None:
        super().__init__(topk)
        if not isinstance(model_key, str):
            raise ConfigError(f"model_key must be a model name, got {model_key!r}")
        self.model_key = model_key
        self.feature_key = feature_key

    def select(self, outputs: Outputs) -> paddle.Tensor:
        if isinstance(outputs, dict):
            if self.model_key not in outputs:
                raise ConfigError(f"DistillationTopkAcc.model_key {self.model_key!r} is not among the model "
                                  f"outputs {sorted(outputs)}.{did_you_mean(self.model_key, outputs)}")
            outputs = outputs[self.model_key]
        if isinstance(outputs, dict):  # a backbone with return_patterns
            outputs = outputs[self.feature_key or "logits"]
        return outputs


@METRICS.register()
class GoogLeNetTopkAcc(TopkAcc):
    """Top-k accuracy of GoogLeNet's main classifier (the first of its ``[out, out1, out2]``).

    Args:
        topk: k values.
    """

    def select(self, outputs: Outputs) -> paddle.Tensor:
        if isinstance(outputs, (list, tuple)) and outputs:
            return super().select(outputs[0])
        raise ConfigError(f"GoogLeNetTopkAcc needs GoogLeNet's outputs [main, aux1, aux2], got "
                          f"{type(outputs).__name__}; use TopkAcc for other models")
