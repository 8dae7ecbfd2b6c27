"""PaddleClas's multi-label and binary metrics: ``HammingDistance``, ``AccuracyScore``,
``MultilabelMeanAccuracy``, ``ATTRMetric`` (PULC attributes) and ``TprAtFpr`` (PULC "exists" tasks).

Like :mod:`ppssld.metric.topk`, each keeps summable counts (``counts()`` -> all-reduce ->
``set_counts()`` -> ``summary()``), so a distributed evaluation equals a single-process one and
the value over a dataset does not depend on the batch size. Multi-label labels are ``[N, C]``
(or ``[N, 2, C]`` with ``label_ratio``); an unknown entry (-1) is excluded from every count, and
an unlabeled image (all -1) therefore from everything. ``TprAtFpr`` reads int labels; -1 rows are
skipped. ``primary_key`` is the value the trainer ranks checkpoints by (PaddleClas's ``avg``).
"""
import logging
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import paddle

from ppssld.arch.roles import LOGITS, student_output_name
from ppssld.utils.checks import is_int, is_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import METRICS

logger = logging.getLogger(__name__)

Outputs = Union[paddle.Tensor, Dict[str, Any]]
EPS = 1e-20  # PaddleClas's AttrMeter epsilon
TPR_STEPS = 10000  # TprAtFpr scans thresholds i / 10000


def select_logits(outputs: Outputs, what: str) -> np.ndarray:
    """``logits``, else ``Student``, else the only entry of a dict output, as float64 numpy."""
    if isinstance(outputs, dict):
        name = student_output_name(outputs)
        if name is None:
            raise ConfigError(f"{what} got outputs of several models {sorted(outputs)} and none is 'Student'")
        outputs = outputs[name]
        if isinstance(outputs, dict):
            outputs = outputs[LOGITS]
    return outputs.astype("float32").numpy().astype(np.float64)


def multilabel_targets(labels: Any, num_classes: int, what: str) -> np.ndarray:
    """``[N, C]`` float targets from ``[N, C]`` or ``[N, 2, C]`` labels."""
    arr = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
    if arr.ndim == 3 and arr.shape[1] == 2:
        arr = arr[:, 0, :]
    if arr.ndim != 2 or arr.shape[1] != num_classes:
        raise ValueError(f"{what} expects multi-label labels [N, {num_classes}] for {num_classes} outputs, got "
                         f"shape {list(arr.shape)}; use MultiLabelDataset")
    return arr.astype(np.float64)


def sigmoid_np(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


FOLD_EVERY = 64  # batches kept on the device by accumulate() before they are read and counted (one host read)


def detached(outputs: Outputs) -> Outputs:
    """``outputs`` without autograd history (a dict's tensors too), so a kept batch does not keep its graph."""
    if isinstance(outputs, dict):
        return {k: detached(v) for k, v in outputs.items()}
    return outputs.detach() if hasattr(outputs, "detach") else outputs


class CountMetric:
    """Base: a float64 count vector, reset / counts / set_counts / summary.

    ``update`` counts a batch at once (one host read) and returns its own summary; ``accumulate``, what the
    training and evaluation loops call, keeps the batch on the device and counts the kept batches together
    every :data:`FOLD_EVERY` batches and when the counts are read, so the hot loop reads nothing per step.
    """

    primary_key = ""
    summary_keys: Sequence[str] = ()

    def __init__(self) -> None:
        self._counts: Optional[np.ndarray] = None
        self._kept: list = []

    def reset(self) -> None:
        """Forget every accumulated count."""
        self._counts = None
        self._kept = []

    def accumulate(self, outputs: Outputs, labels: Any) -> None:
        """Keep one batch (no host read); see the class docstring."""
        self._kept.append((detached(outputs), labels))
        if len(self._kept) >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        kept, self._kept = self._kept, []
        for outputs, labels in kept:
            self._add(outputs, labels)

    def _add(self, outputs: Outputs, labels: Any) -> np.ndarray:
        try:
            batch = self.batch_counts(outputs, labels)
        except ValueError as exc:
            raise ConfigError(f"metric {type(self).__name__}: {exc}") from exc
        self._counts = batch if self._counts is None else self._counts + batch
        return batch

    def batch_counts(self, outputs: Outputs, labels: Any) -> np.ndarray:
        """This batch's count vector."""
        raise NotImplementedError

    def update(self, outputs: Outputs, labels: Any) -> Dict[str, float]:
        """Add one batch; returns its own summary."""
        self._fold()
        return self._summarise(self._add(outputs, labels))

    def counts(self) -> np.ndarray:
        """Accumulated counts (a copy), for all-reduce."""
        self._fold()
        return np.zeros(0) if self._counts is None else self._counts.copy()

    def set_counts(self, counts: Any) -> None:
        """Replace the accumulated counts (e.g. by their sum over ranks)."""
        self._fold()
        arr = np.asarray(counts, dtype=np.float64)
        if self._counts is not None and arr.shape != self._counts.shape:
            raise ValueError(f"expected counts of shape {self._counts.shape}, got {arr.shape}")
        self._counts = arr if arr.size else None

    def summary(self) -> Dict[str, float]:
        """The metric over every batch since :meth:`reset` (zeros when none)."""
        self._fold()
        if self._counts is None:
            return {k: 0.0 for k in self.summary_keys}
        return self._summarise(self._counts)

    def _summarise(self, counts: np.ndarray) -> Dict[str, float]:
        raise NotImplementedError


def _check_threshold(value: Any, name: str) -> float:
    if not is_number(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


@METRICS.register()
class HammingDistance(CountMetric):
    """Fraction of known label entries predicted wrong (``sigmoid > bi_threshold``); lower is better."""

    primary_key = "HammingDistance"
    summary_keys = ("HammingDistance",)

    def __init__(self, bi_threshold: float = 0.5) -> None:
        super().__init__()
        self.bi_threshold = _check_threshold(bi_threshold, "bi_threshold")

    def batch_counts(self, outputs: Outputs, labels: Any) -> np.ndarray:
        scores = sigmoid_np(select_logits(outputs, "HammingDistance"))
        targets = multilabel_targets(labels, scores.shape[1], "HammingDistance")
        known = targets >= 0
        wrong = ((scores > self.bi_threshold) != (targets == 1)) & known
        return np.array([wrong.sum(), known.sum()], dtype=np.float64)

    def _summarise(self, counts: np.ndarray) -> Dict[str, float]:
        return {"HammingDistance": float(counts[0] / counts[1]) if counts[1] else 0.0}


@METRICS.register()
class AccuracyScore(CountMetric):
    """``base: label``: fraction of known entries right (PaddleClas's default); ``base: sample``:
    fraction of labeled images with every known entry right."""

    primary_key = "AccuracyScore"
    summary_keys = ("AccuracyScore",)

    def __init__(self, base: str = "label", bi_threshold: float = 0.5) -> None:
        super().__init__()
        if base not in ("label", "sample"):
            raise ConfigError(f"base must be 'label' or 'sample', got {base!r}")
        self.base = base
        self.bi_threshold = _check_threshold(bi_threshold, "bi_threshold")

    def batch_counts(self, outputs: Outputs, labels: Any) -> np.ndarray:
        scores = sigmoid_np(select_logits(outputs, "AccuracyScore"))
        targets = multilabel_targets(labels, scores.shape[1], "AccuracyScore")
        known = targets >= 0
        right = ((scores > self.bi_threshold) == (targets == 1)) & known
        if self.base == "label":
            return np.array([right.sum(), known.sum()], dtype=np.float64)
        rows = known.any(axis=1)
        exact = (right.sum(axis=1) == known.sum(axis=1)) & rows
        return np.array([exact.sum(), rows.sum()], dtype=np.float64)

    def _summarise(self, counts: np.ndarray) -> Dict[str, float]:
        return {"AccuracyScore": float(counts[0] / counts[1]) if counts[1] else 0.0}


@METRICS.register()
class MultilabelMeanAccuracy(CountMetric):
    """Label-wise mean accuracy at the best of ``num_iterations`` thresholds from ``start_threshold``
    towards ``end_threshold`` (on sigmoid scores), as PaddleClas: keys ``mean_acc``, ``threshold``."""

    primary_key = "mean_acc"
    summary_keys = ("mean_acc", "threshold")

    def __init__(self, start_threshold: float = 0.4, num_iterations: int = 10, end_threshold: float = 0.9) -> None:
        super().__init__()
        if not is_int(num_iterations) or num_iterations < 1:
            raise ConfigError(f"num_iterations must be an int >= 1, got {num_iterations!r}")
        start = _check_threshold(start_threshold, "start_threshold")
        end = _check_threshold(end_threshold, "end_threshold")
        self.thresholds = [start + i * (end - start) / num_iterations for i in range(num_iterations)]

    def batch_counts(self, outputs: Outputs, labels: Any) -> np.ndarray:
        scores = sigmoid_np(select_logits(outputs, "MultilabelMeanAccuracy"))
        targets = multilabel_targets(labels, scores.shape[1], "MultilabelMeanAccuracy")
        known = targets >= 0
        right = [(((scores > t) == (targets == 1)) & known).sum() for t in self.thresholds]
        return np.array(right + [known.sum()], dtype=np.float64)

    def _summarise(self, counts: np.ndarray) -> Dict[str, float]:
        if not counts[-1]:
            return {"mean_acc": 0.0, "threshold": self.thresholds[0]}
        accs = counts[:-1] / counts[-1]
        best = len(accs) - 1 - int(np.argmax(accs[::-1]))  # the last of equal maxima, as PaddleClas (<=)
        return {"mean_acc": float(accs[best]), "threshold": float(self.thresholds[best])}


@METRICS.register()
class ATTRMetric(CountMetric):
    """PaddleClas's pedestrian/vehicle attribute metric (``AttrMeter``): label mean accuracy ``ma``
    (mean over classes of (positive recall + negative recall) / 2), ``label_f1``, ``label_pos_recall``,
    ``label_neg_recall`` and instance ``instance_f1``, ``instance_acc``, ``instance_prec``,
    ``instance_recall``. As PaddleClas, ``threshold`` is compared with the raw model output."""

    primary_key = "ma"
    summary_keys = ("ma", "label_f1", "label_pos_recall", "label_neg_recall", "instance_f1", "instance_acc",
                    "instance_prec", "instance_recall")

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = _check_threshold(threshold, "threshold")

    def batch_counts(self, outputs: Outputs, labels: Any) -> np.ndarray:
        out = select_logits(outputs, "ATTRMetric")
        gt = multilabel_targets(labels, out.shape[1], "ATTRMetric")
        pred = np.where(gt == -1, -1, (out > self.threshold).astype(np.int64))
        pos, neg, ppos, pneg = gt == 1, gt == 0, pred == 1, pred == 0
        per_class = [pos.sum(0), neg.sum(0), (pos & ppos).sum(0), (neg & pneg).sum(0), (neg & ppos).sum(0),
                     (pos & pneg).sum(0)]
        rows = (gt != -1).any(axis=1)
        inter = (pos & ppos).sum(1).astype(np.float64)
        union = (pos | ppos).sum(1)
        acc, prec, rec = inter / (union + EPS), inter / (ppos.sum(1) + EPS), inter / (pos.sum(1) + EPS)
        instance = [(acc * rows).sum(), (prec * rows).sum(), (rec * rows).sum(), rows.sum()]
        return np.concatenate([np.concatenate(per_class).astype(np.float64), np.array(instance, np.float64)])

    def _summarise(self, counts: np.ndarray) -> Dict[str, float]:
        gt_pos, gt_neg, tp, tn, fp, fn = counts[:-4].reshape(6, -1)
        pos_recall, neg_recall = tp / (gt_pos + EPS), tn / (gt_neg + EPS)
        prec = tp / (tp + fp + EPS)
        acc_sum, prec_sum, rec_sum, n = counts[-4:]
        i_acc, i_prec, i_rec = (acc_sum / n, prec_sum / n, rec_sum / n) if n else (0.0, 0.0, 0.0)
        values = [np.mean((pos_recall + neg_recall) / 2), np.mean(2 * prec * pos_recall / (prec + pos_recall + EPS)),
                  np.mean(pos_recall), np.mean(neg_recall), 2 * i_prec * i_rec / (i_prec + i_rec + EPS),
                  i_acc, i_prec, i_rec]
        return {k: float(v) for k, v in zip(self.summary_keys, values)}


@METRICS.register()
class TprAtFpr(CountMetric):
    """Best true-positive rate with false-positive rate ``<= max_fpr`` for a binary classifier.

    The score is ``softmax(logits)[:, 1]``; thresholds ``i / 10000`` (i = 0..9999) are scanned as
    PaddleClas does, from per-threshold counts (summable across ranks and batches). Keys ``tpr``
    (the primary value), ``fpr`` and ``threshold``. Label 0 is negative, any other label positive,
    -1 skipped.
    """

    primary_key = "tpr"
    summary_keys = ("tpr", "fpr", "threshold")

    def __init__(self, max_fpr: float = 1 / 1000.0) -> None:
        super().__init__()
        self.max_fpr = _check_threshold(max_fpr, "max_fpr")
        self._grid = np.arange(TPR_STEPS, dtype=np.float64) / TPR_STEPS
        self._warned = False

    def batch_counts(self, outputs: Outputs, labels: Any) -> np.ndarray:
        logits = select_logits(outputs, "TprAtFpr")
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise ValueError(f"TprAtFpr needs logits [N, >=2] (class 1 is the positive), got {list(logits.shape)}")
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        score = (z[:, 1] / z.sum(axis=1)).astype(np.float32).astype(np.float64)  # PaddleClas scores in float32
        arr = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
        lab = arr.reshape(-1).astype(np.int64)
        if lab.shape[0] != score.shape[0]:
            raise ValueError(f"{score.shape[0]} rows of logits but {lab.shape[0]} labels")
        above = np.searchsorted(self._grid, score, side="left")  # thresholds strictly below each score
        pos = np.bincount(above[lab > 0], minlength=TPR_STEPS + 1)
        neg = np.bincount(above[lab == 0], minlength=TPR_STEPS + 1)
        return np.concatenate([pos, neg]).astype(np.float64)

    def _summarise(self, counts: np.ndarray) -> Dict[str, float]:
        pos, neg = counts[:TPR_STEPS + 1], counts[TPR_STEPS + 1:]
        # scores strictly above threshold i: those whose count of thresholds below them exceeds i
        pos_above = np.cumsum(pos[::-1])[::-1][1:]
        neg_above = np.cumsum(neg[::-1])[::-1][1:]
        n_pos, n_neg = pos.sum(), neg.sum()
        best = {"tpr": 0.0, "fpr": 0.0, "threshold": 0.0}
        if not n_pos:
            return best
        if not n_neg and not self._warned:
            logger.warning("TprAtFpr: no negative sample was seen; the false-positive rate is taken as 0")
            self._warned = True
        tpr = pos_above / n_pos
        fpr = neg_above / n_neg if n_neg else np.zeros_like(tpr)
        ok = np.nonzero(fpr <= self.max_fpr)[0]
        if ok.size:
            i = int(ok[np.argmax(tpr[ok])])  # the first threshold reaching the best tpr, as PaddleClas (>)
            if tpr[i] > 0:
                best = {"tpr": float(tpr[i]), "fpr": float(fpr[i]), "threshold": float(self._grid[i])}
        return best
