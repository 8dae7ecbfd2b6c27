"""The mining report (JSON) and the images-per-class bar chart (PNG)."""
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

from ppssld.utils.io import atomic_save, atomic_write_json

logger = logging.getLogger(__name__)


def plot_per_class(counts: Sequence[int], path: str, k: Optional[int] = None,
                   class_names: Optional[Sequence[str]] = None, title: str = "Selected images per class") -> None:
    """Write a bar chart of ``counts`` (one bar per class) to ``path`` atomically.

    Args:
        counts: images per class.
        path: destination ``.png``.
        k: draw the per-class target as a dashed line.
        class_names: tick labels (default class indices; hidden past 40 classes).
        title: chart title.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(counts)
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, 0.35 * n + 2)), 4.0), dpi=100)
    try:
        short = [i for i, c in enumerate(counts) if k is not None and c < k]
        colors = ["tab:orange" if i in set(short) else "tab:blue" for i in range(n)]
        ax.bar(range(n), counts, color=colors)
        if k is not None:
            ax.axhline(k, color="grey", linestyle="--", linewidth=1, label=f"k = {k}")
            ax.legend(loc="lower right")
        ax.set_xlabel("class")
        ax.set_ylabel("images")
        ax.set_title(f"{title} (total {sum(counts)}; orange: fewer than k)" if k else title)
        if n <= 40:
            ax.set_xticks(range(n))
            ax.set_xticklabels(list(class_names) if class_names and len(class_names) == n else range(n),
                               rotation=45 if class_names else 0, ha="right" if class_names else "center",
                               fontsize=8)
        fig.tight_layout()
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def write_report(path: str, report: Dict[str, Any]) -> None:
    """Write the report JSON atomically."""
    atomic_write_json(path, report)
    logger.info("report written to %s", path)


def duplicate_entries(matches: List[Any], pool_paths: Sequence[str], ref_paths: Sequence[str],
                      against: str) -> List[Dict[str, Any]]:
    """Report rows for removed duplicates: the pool image and the reference image it matched."""
    rows = []
    for m in matches:
        row = {"pool_image": pool_paths[m.query], "matched_image": ref_paths[m.ref], "against": against}
        if hasattr(m, "distance"):
            row["hash_distance"] = int(m.distance)
            row["pixel_high_pass"] = None if m.high != m.high else round(float(m.high), 4)
            row["pixel_band_pass"] = None if m.band != m.band else round(float(m.band), 4)
        if hasattr(m, "cosine"):
            row["feature_cosine"] = round(float(m.cosine), 4)
        rows.append(row)
    return rows


def class_names_from(path: Optional[str], class_num: int) -> Optional[List[str]]:
    """Class names from a ``label_list.txt`` (``index name`` or one name per line), else None."""
    if not path or not os.path.isfile(path):
        return None
    names = []
    with open(path, "r", encoding="utf-8") as handle:
        for line in handle:
            parts = line.strip().split(maxsplit=1)
            if parts:
                names.append(parts[1] if len(parts) == 2 and parts[0].isdigit() else parts[0])
    return names if len(names) == class_num else None


def teacher_accuracy(predicted: Sequence[int], truth: Sequence[int], class_num: int,
                     class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """How often the teacher's class was right for the mined images (when their true labels are known,
    e.g. a demo that hid the labels of its pool).

    Args:
        predicted: the teacher's class of each mined image.
        truth: each image's true class.
        class_num: number of classes.
        class_names: names for the per-class rows.
    Returns:
        ``{"images", "correct", "accuracy", "per_class": [{"class", "name", "mined", "correct", "accuracy"}]}``,
        per class of the teacher's prediction (the class the image was mined for).
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} true labels")
    rows = []
    for c in range(class_num):
        idx = [i for i, p in enumerate(predicted) if int(p) == c]
        right = sum(1 for i in idx if int(truth[i]) == c)
        rows.append({"class": c, "name": class_names[c] if class_names else str(c), "mined": len(idx),
                     "correct": right, "accuracy": round(right / len(idx), 4) if idx else None})
    correct = sum(1 for p, t in zip(predicted, truth) if int(p) == int(t))
    return {"images": len(predicted), "correct": correct,
            "accuracy": round(correct / len(predicted), 4) if len(predicted) else None, "per_class": rows}


def plot_mined_accuracy(accuracy: Dict[str, Any], path: str, k: Optional[int] = None) -> None:
    """``per_class.png`` with the known truth: per class, mined images split into right and wrong teacher labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = accuracy["per_class"]
    n = len(rows)
    right = [r["correct"] for r in rows]
    wrong = [r["mined"] - r["correct"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, 0.5 * n + 2)), 4.2), dpi=100)
    try:
        ax.bar(range(n), right, color="tab:green", label="teacher's class right")
        ax.bar(range(n), wrong, bottom=right, color="tab:red", label="teacher's class wrong")
        if k is not None:
            ax.axhline(k, color="grey", linestyle="--", linewidth=1, label=f"k = {k}")
        ax.set_ylim(0, 1.15 * max([r["mined"] for r in rows] + [k or 0, 1]))
        ax.set_ylabel("mined images")
        ax.set_title(f"Mined images per class: {accuracy['images']}, teacher right for "
                     f"{100 * (accuracy['accuracy'] or 0):.1f}% (hidden labels)")
        ax.set_xticks(range(n))
        ax.set_xticklabels([r["name"] for r in rows], rotation=45 if n > 5 else 0, ha="right" if n > 5 else "center",
                           fontsize=8)
        ax.legend(loc="upper right", fontsize=8, ncol=3)
        fig.tight_layout()
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def name_classes(report: Dict[str, Any], class_names: Sequence[str]) -> Dict[str, Any]:
    """A copy of ``report`` with ``class_names`` and the per-class counts keyed by class name too."""
    named = dict(report)
    named["class_names"] = list(class_names)
    named["per_class_named"] = {class_names[i]: n for i, n in enumerate(report.get("per_class", []))}
    named["short_classes"] = [dict(row, name=class_names[row["class"]]) for row in report.get("short_classes", [])]
    return named
