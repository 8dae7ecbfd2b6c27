"""The main job's mining glue: class names in ``report.json`` and, where the pool's labels were only hidden
(the demo knows them), how often the teacher's class was right for the mined images."""
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ppssld.data.label_list import read_label_list
from ppssld.mining.pipeline import pool_paths
from ppssld.mining.report import name_classes, plot_mined_accuracy, teacher_accuracy, write_report
from ppssld.mining.score import load_scores
from ppssld.mining.select import select_topk

logger = logging.getLogger(__name__)


def mined_accuracy(report: Dict[str, Any], pool: str, paths: Dict[str, str], k: int, out: str,
                   names: Sequence[str]) -> Optional[Dict[str, Any]]:
    """Name the classes in ``out/report.json``; with the pool's hidden labels (``paths["hidden_labels"]``), add
    how often the teacher's class was right for the mined images and redraw ``out/per_class.png``.

    Returns:
        The accuracy summary (:func:`ppssld.mining.report.teacher_accuracy`), or None without hidden labels.
    """
    report = name_classes(report, names)
    accuracy = None
    if os.path.isfile(paths["hidden_labels"]):
        truth = {os.path.normpath(r.path): r.label for r in read_label_list(paths["hidden_labels"])}
        order, _ = pool_paths(pool, paths["image_root"])
        mined = [os.path.normpath(r.path) for r in read_label_list(os.path.join(out, "selected_list.txt"),
                                                                   unlabeled=True, ignore_labels=True)]
        picked, meaning = mined_classes(report, order, mined, out)
        accuracy = teacher_accuracy([picked[m] for m in mined], [truth[m] for m in mined], report["class_num"], names)
        report["teacher_right_on_mined"] = dict(accuracy, source=paths["hidden_labels"], teacher_class=meaning,
                                                note="the pool's hidden labels, never used for training")
        plot_mined_accuracy(accuracy, os.path.join(out, "per_class.png"), k)
        logger.info("the teacher's class was right for %d of the %d mined images (%.1f%%; hidden labels)",
                    accuracy["correct"], accuracy["images"], 100 * (accuracy["accuracy"] or 0))
    write_report(os.path.join(out, "report.json"), report)
    return accuracy


def mined_classes(report: Dict[str, Any], order: List[str], mined: List[str], out: str) -> Tuple[Dict[str, int], str]:
    """The class each mined image was picked for: the selection re-done from the stored scores with the
    report's settings (checked to give the mined list exactly); else the teacher's top-1 class."""
    scores = load_scores(os.path.join(out, "scores"))
    keys = [os.path.normpath(p) for p in order]
    removed = {os.path.normpath(r["pool_image"]) for r in report.get("removed_duplicates", [])}
    valid = scores.ok & np.array([key not in removed for key in keys])
    sel = select_topk(scores.prob, scores.cls, int(report["k"]), int(report["class_num"]), valid,
                      float(report.get("min_conf") or 0.0), report.get("cap"))
    again = {keys[i]: int(c) for i, c in zip(sel.index, sel.label)}
    if sorted(again) == sorted(mined):
        return again, "the class the image was mined for"
    logger.warning("the re-done selection differs from %s; scoring the teacher's top-1 class instead",
                   os.path.join(out, "selected_list.txt"))
    return {key: int(c) for key, c in zip(keys, scores.cls[:, 0])}, "the teacher's top-1 class"
