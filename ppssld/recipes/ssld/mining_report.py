"""The main job's mining glue: class names in ``report.json`` and, where the pool's labels were only hidden
(the demo knows them), how often the teacher's class was right for the mined images."""
import logging
import os
from typing import Any, Dict, Optional, Sequence

from ppssld.data.lists.label_list import read_label_list
from ppssld.mining.mine import SELECTED_CLASSES
from ppssld.mining.report import name_classes, plot_mined_accuracy, teacher_accuracy, write_report

logger = logging.getLogger(__name__)


def mined_accuracy(report: Dict[str, Any], paths: Dict[str, str], k: int, out: str,
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
        picked = mined_classes(out)
        accuracy = teacher_accuracy(list(picked.values()), [truth[m] for m in picked], report["class_num"], names)
        report["teacher_right_on_mined"] = dict(accuracy, source=paths["hidden_labels"],
                                                teacher_class="the class the image was mined for",
                                                note="the pool's hidden labels, never used for training")
        plot_mined_accuracy(accuracy, os.path.join(out, "per_class.png"), k)
        logger.info("the teacher's class was right for %d of the %d mined images (%.1f%%; hidden labels)",
                    accuracy["correct"], accuracy["images"], 100 * (accuracy["accuracy"] or 0))
    write_report(os.path.join(out, "report.json"), report)
    return accuracy


def mined_classes(out: str) -> Dict[str, int]:
    """The class each mined image was selected for, as the mining run wrote it beside ``selected_list.txt``."""
    return {os.path.normpath(r.path): r.label for r in read_label_list(os.path.join(out, SELECTED_CLASSES))}
