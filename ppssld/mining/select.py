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


def select_topk(prob: np.ndarray, cls: np.ndarray, k: int, class_num: int, valid: Optional[np.ndarray] = None,
                min_conf: float = 0.0, cap: Optional[int] = None) -> Selection:
    """Pick the k most confident images per class.

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
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if cap is not None and cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    n = len(prob)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    if cls.size and (cls.max() >= class_num):
        raise ValueError(f"class index {int(cls.max())} is outside [0, {class_num}): wrong class_num?")
    rows, cols = np.nonzero((cls >= 0) & valid[:, None] & (prob >= min_conf))
    img, c, p = rows.astype(np.int64), cls[rows, cols].astype(np.int64), prob[rows, cols]
    candidates = np.bincount(c, minlength=class_num)
    order = np.lexsort((img, -p, c))  # by class, probability falling, index rising
    img, c, p = img[order], c[order], p[order]
    starts = np.searchsorted(c, np.arange(class_num))
    rank = np.arange(len(c)) - starts[c]
    keep = rank < k
    img, c, p, rank = img[keep], c[keep], p[keep], rank[keep]
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
    return Selection(img[order], c[order], p[order].astype(np.float32), rank[order], candidates)


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
