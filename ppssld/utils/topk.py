"""The one stable top-k: the k highest values of each row, ties broken toward the lower class.

Used wherever ppssld keeps a teacher's best classes (mining's pool scores, the soft-label cache) and where the
deploy predictor reports its top-k (:func:`ppssld.export.runtime.topk_results`), so the same scores give the
same classes in the same order everywhere. NumPy only.
"""
from typing import Any, Tuple

import numpy as np


def top_k(probs: np.ndarray, k: int, index_dtype: Any = None, prob_dtype: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(values (n, k) descending, their classes (n, k))`` per row of ``probs``; ties keep the lower class
    first. ``index_dtype`` / ``prob_dtype``: cast the classes / values (default: as computed)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(probs, order, axis=1)
    return (values if prob_dtype is None else values.astype(prob_dtype),
            order if index_dtype is None else order.astype(index_dtype))
