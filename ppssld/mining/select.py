"""Top-k per class selection from stored top-N teacher probabilities.

For class c the candidates are the images whose top-N holds c (exact when N >= the class
count; otherwise an image whose probability for c is below its N-th probability cannot be
picked for c). Each class keeps its k most probable candidates (ties: lower pool index
first); an image picked by several classes stays once, under its most probable class, so
the total can be below C*k. An optional minimum confidence drops weak candidates, and an
optional cap keeps the total balanced: picks are taken rank by rank across classes (every
class's best, then every class's second, ...).
"""
import logging
from typing import Dict, List, NamedTuple, Optional

import numpy as np

logger = logging.getLogger(__name__)


class Selection(NamedTuple):
    """Selected images, sorted by class then by falling probability.

    Attributes:
        index: pool indices.
        label: the class each image was assigned to (the teacher's pick; hidden in the output list).
        prob: the teacher's probability for that class.
        rank: the image's rank within its class's candidates (0 = most probable).
        candidates: per class, how many images qualified (before k and de-overlapping).
    """
    index: np.ndarray
    label: np.ndarray
    prob: np.ndarray
    rank: np.ndarray
    candidates: np.ndarray


class StreamingTopK:
    """Per-class top-k over chunks of a pool read in index order: memory grows with C x k, not the pool.

    Each chunk's candidates are first compared with the class's current k-th probability
    (a later image that only ties it loses, as in the one-shot order), and only the survivors
    are merged. :meth:`result` applies the rules of the module docstring.

    Args:
        k: images per class.
        class_num: C.
        min_conf: a candidate needs at least this probability for the class.
    Raises:
        ValueError: k < 1.
    """

    def __init__(self, k: int, class_num: int, min_conf: float = 0.0) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.class_num, self.min_conf = k, class_num, min_conf
        self.img = np.zeros(0, np.int64)
        self.cls = np.zeros(0, np.int64)
        self.prob = np.zeros(0, np.float32)
        self.kth = np.full(class_num, -np.inf, np.float32)  # k-th best probability of full classes
        self.candidates = np.zeros(class_num, np.int64)
        self.next_index = 0

    def add(self, prob: np.ndarray, cls: np.ndarray, valid: Optional[np.ndarray] = None, offset: int = 0) -> None:
        """Add pool rows ``offset .. offset + len(prob) - 1`` (top-N ``prob``/``cls``; ``valid`` allowed rows).

        Raises:
            ValueError: a class index outside [0, class_num), or rows out of order.
        """
        if offset < self.next_index:
            raise ValueError(f"chunks must come in index order: row {offset} after row {self.next_index - 1}")
        self.next_index = offset + len(prob)
        if cls.size and cls.max() >= self.class_num:
            raise ValueError(f"class index {int(cls.max())} is outside [0, {self.class_num}): wrong class_num?")
        valid = np.ones(len(prob), bool) if valid is None else np.asarray(valid, bool)
        rows, cols = np.nonzero((cls >= 0) & valid[:, None] & (prob >= self.min_conf))
        c, p = cls[rows, cols].astype(np.int64), prob[rows, cols].astype(np.float32)
        self.candidates += np.bincount(c, minlength=self.class_num)
        keep = p > self.kth[c]
        if not keep.any():
            return
        img = np.concatenate([self.img, rows[keep].astype(np.int64) + offset])
        c = np.concatenate([self.cls, c[keep]])
        p = np.concatenate([self.prob, p[keep]])
        order = np.lexsort((img, -p, c))  # by class, probability falling, index rising
        img, c, p = img[order], c[order], p[order]
        rank = np.arange(len(c)) - np.searchsorted(c, np.arange(self.class_num))[c]
        top = rank < self.k
        self.img, self.cls, self.prob = img[top], c[top], p[top]
        full = np.flatnonzero(np.bincount(self.cls, minlength=self.class_num) >= self.k)
        last = np.searchsorted(self.cls, full) + self.k - 1
        self.kth[full] = self.prob[last]

    def result(self, cap: Optional[int] = None) -> "Selection":
        """The selection (see :func:`select_topk`).

        Raises:
            ValueError: cap < 0.
        """
        if cap is not None and cap < 0:
            raise ValueError(f"cap must be >= 0, got {cap}")
        img, c, p = self.img, self.cls, self.prob
        rank = np.arange(len(c)) - np.searchsorted(c, np.arange(self.class_num))[c]
        # an image chosen by several classes: keep its most probable (then lowest) class
        order = np.lexsort((c, -p, img))
        first = np.ones(len(order), bool)
        first[1:] = img[order][1:] != img[order][:-1]
        chosen = order[first]
        img, c, p, rank = img[chosen], c[chosen], p[chosen], rank[chosen]
        if cap is not None and len(img) > cap:
            order = np.lexsort((img, -p, rank))[:cap]
            img, c, p, rank = img[order], c[order], p[order], rank[order]
        order = np.lexsort((img, -p, c))
        return Selection(img[order], c[order], p[order].astype(np.float32), rank[order], self.candidates.copy())


def select_topk(prob: np.ndarray, cls: np.ndarray, k: int, class_num: int, valid: Optional[np.ndarray] = None,
                min_conf: float = 0.0, cap: Optional[int] = None) -> Selection:
    """Pick the k most confident images per class (all rows at once; see :class:`StreamingTopK`).

    Args:
        prob: (n, N) top-N probabilities.
        cls: (n, N) their class indices (-1 = none).
        k: images per class.
        class_num: C.
        valid: (n,) bool, images allowed (read, not duplicates); default all.
        min_conf: a candidate needs at least this probability for the class.
        cap: at most this many images in total.
    Returns:
        The selection.
    Raises:
        ValueError: k < 1, cap < 0, a class index outside [0, class_num).
    """
    if cap is not None and cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    acc = StreamingTopK(k, class_num, min_conf)
    acc.add(prob, cls, valid)
    return acc.result(cap)


def per_class_counts(selection: Selection, class_num: int) -> List[int]:
    """Selected images per class."""
    return np.bincount(selection.label, minlength=class_num).astype(int).tolist()


def confidence_stats(values: np.ndarray) -> Dict[str, float]:
    """min / mean / median / max / p10 of probabilities (empty -> zeros with count 0)."""
    if len(values) == 0:
        return {"count": 0}
    v = np.asarray(values, np.float64)
    return {"count": int(len(v)), "min": round(float(v.min()), 6), "p10": round(float(np.percentile(v, 10)), 6),
            "median": round(float(np.median(v)), 6), "mean": round(float(v.mean()), 6),
            "max": round(float(v.max()), 6)}
