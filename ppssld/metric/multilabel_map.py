"""PaddleClas's ``MultiLabelMAP`` (its MultiLabelCOCO configs): mean over classes of the average precision of
the sigmoid scores, ``map_type`` ``integral`` (area under the precision-recall steps) or ``11point`` (VOC's
11 recall points).

AP ranks every score of the evaluation set, so unlike the count metrics this one keeps the scores and
labels themselves; ``counts()`` hands them over flattened (one process: the evaluator's sum is the identity).
Ties keep the order the images were seen in. An unknown label entry (-1) is left out of its class, and a
class with no positive image is left out of the mean, as in PaddleClas.
"""
import logging
from typing import Any, Dict, List, Optional

import numpy as np

from ppssld.metric.multilabel import FOLD_EVERY, Outputs, detached, multilabel_targets, select_logits, sigmoid_np
from ppssld.utils import dist_env
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import METRICS

logger = logging.getLogger(__name__)

MAP_TYPES = ("integral", "11point")


def average_precision(scores: np.ndarray, positive: np.ndarray, map_type: str) -> float:
    """AP of one class from its scores and 0/1 labels (at least one positive), PaddleClas's two ways."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    tp, fp = np.cumsum(hits), np.cumsum(1.0 - hits)
    precision, recall = tp / (tp + fp), tp / hits.sum()
    if map_type == "integral":
        ap, prev = 0.0, 0.0
        for p, r in zip(precision, recall):
            if abs(r - prev) > 1e-6:
                ap += p * abs(r - prev)
                prev = r
        return float(ap)
    best = [0.0] * 11  # the highest precision at recall >= j / 10, for j = 0..10
    for j in range(11):
        reached = precision[recall >= j / 10.0]
        best[j] = float(reached.max()) if reached.size else 0.0
    return float(sum(best) / 11.0)


@METRICS.register()
class MultiLabelMAP:
    """Multi-label mean average precision over classes (key ``MultiLabelMAP``, higher is better)."""

    primary_key = "MultiLabelMAP"
    summary_keys = ("MultiLabelMAP",)

    def __init__(self, map_type: str = "integral") -> None:
        if map_type not in MAP_TYPES:
            raise ConfigError(f"map_type must be one of {', '.join(MAP_TYPES)}, got {map_type!r}")
        self.map_type = map_type
        self.reset()

    def reset(self) -> None:
        """Forget every score."""
        self._scores: List[np.ndarray] = []
        self._targets: List[np.ndarray] = []
        self._classes: Optional[int] = None
        self._kept: list = []

    def _add(self, outputs: Outputs, labels: Any) -> None:
        scores = sigmoid_np(select_logits(outputs, "MultiLabelMAP"))
        try:
            targets = multilabel_targets(labels, scores.shape[1], "MultiLabelMAP")
        except ValueError as exc:
            raise ConfigError(f"metric MultiLabelMAP: {exc}") from exc
        self._classes = scores.shape[1]
        self._scores.append(scores)
        self._targets.append(targets)

    def _fold(self) -> None:
        kept, self._kept = self._kept, []
        for outputs, labels in kept:
            self._add(outputs, labels)

    def accumulate(self, outputs: Outputs, labels: Any) -> None:
        """Keep one batch on the device (no host read, no per-batch mAP); read when the scores are needed."""
        self._kept.append((detached(outputs), labels))
        if len(self._kept) >= FOLD_EVERY:
            self._fold()

    def update(self, outputs: Outputs, labels: Any) -> Dict[str, float]:
        """Add one batch; returns the mAP of this batch alone."""
        self._fold()
        self._add(outputs, labels)
        return {"MultiLabelMAP": self._map(self._scores[-1], self._targets[-1])}

    def counts(self) -> np.ndarray:
        """Scores then labels, flattened (``[N * C * 2]``)."""
        self._fold()
        if dist_env.world_size() > 1:
            raise ConfigError("MultiLabelMAP ranks every score of the evaluation set, which ppssld's distributed "
                              "evaluation (it sums per-process counts) cannot: evaluate it in one process")
        if not self._scores:
            return np.zeros(0)
        return np.concatenate([np.concatenate(self._scores).ravel(), np.concatenate(self._targets).ravel()])

    def set_counts(self, counts: Any) -> None:
        """Replace the kept scores and labels by a :meth:`counts` vector."""
        self._fold()
        arr = np.asarray(counts, dtype=np.float64)
        if not arr.size:
            self.reset()
            return
        if not self._classes:
            raise ValueError("MultiLabelMAP.set_counts needs a batch first (it does not know the class count)")
        half = arr.size // 2
        self._scores = [arr[:half].reshape(-1, self._classes)]
        self._targets = [arr[half:].reshape(-1, self._classes)]

    def summary(self) -> Dict[str, float]:
        """mAP over every batch since :meth:`reset` (0 when none)."""
        self._fold()
        if not self._scores:
            return {"MultiLabelMAP": 0.0}
        return {"MultiLabelMAP": self._map(np.concatenate(self._scores), np.concatenate(self._targets))}

    def _map(self, scores: np.ndarray, targets: np.ndarray) -> float:
        aps = []
        for c in range(scores.shape[1]):
            known = targets[:, c] >= 0
            positive = targets[known, c] == 1
            if positive.any():
                aps.append(average_precision(scores[known, c], positive, self.map_type))
        return float(np.mean(aps)) if aps else 0.0
