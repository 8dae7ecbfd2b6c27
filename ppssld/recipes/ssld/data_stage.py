"""The main job's data stage: the images written once, the student's lists and the teacher's list."""
import logging
import os
from typing import Any, Dict, Optional

from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)


def paths(folder: str, which: str) -> Dict[str, str]:
    """The files of the ``which`` (``student`` or ``teacher``) lists under the data stage's ``folder``."""
    base = os.path.join(folder, which)
    return {"image_root": os.path.join(base, "images"), "train": os.path.join(base, "train_list.txt"),
            "unlabeled": os.path.join(base, "unlabeled_list.txt"), "val": os.path.join(base, "val_list.txt"),
            "labels": os.path.join(base, "label_list.txt"),
            "hidden_labels": os.path.join(base, "analysis", "unlabeled_true_labels.txt")}


def prepare(cfg: Dict[str, Any], folder: str) -> Dict[str, Any]:
    """Write the images once into ``folder``; the student's lists and (unless a teacher is given) the
    teacher's fully labeled list both point at them. Returns the stage's results."""
    from ppssld.data.prepare import prepare_dataset

    data = cfg["data"]
    name = data.get("dataset", "fashion_mnist")
    student = prepare_dataset(name, os.path.join(folder, "student"), src=data.get("src"),
                              labeled=data.get("labeled"), unlabeled=data.get("unlabeled"),
                              seed=int(data.get("seed", 0)))
    result = {"student": paths(folder, "student"),
              "counts": {k: student[k] for k in ("train_labeled", "unlabeled", "val")},
              "class_names": list(student["class_names"])}
    if not (cfg["teacher"] or {}).get("pretrained"):
        result["teacher"] = teacher_lists(folder, data.get("teacher_labeled"), int(data.get("seed", 0)),
                                          len(student["class_names"]))
        result["counts"]["teacher_labeled"] = result["teacher"].pop("count")
    return result


def teacher_lists(folder: str, size: Optional[int], seed: int, class_num: int) -> Dict[str, Any]:
    """The teacher's list: a class-balanced ``size`` (None: all) of the training images with their
    labels (the demo plays an off-the-shelf teacher trained on every label), pointing at the
    student's image copy; validation set and class names are the student's."""
    import numpy as np

    from ppssld.data.lists.label_list import read_label_list, write_label_list
    from ppssld.data.prepare import split_labeled

    student = paths(folder, "student")
    records = [(r.path, r.label) for r in read_label_list(student["train"])]
    if os.path.isfile(student["hidden_labels"]):
        records += [(r.path, r.label) for r in read_label_list(student["hidden_labels"])]
    records.sort()
    labels = np.array([label for _, label in records])
    if size is not None and int(size) > len(records):
        raise ConfigError(f"data.teacher_labeled={size}: only {len(records)} training images exist")
    keep, _ = split_labeled(labels, class_num, None if size is None else int(size), None, seed)
    out = os.path.join(folder, "teacher")
    os.makedirs(out, exist_ok=True)
    train = os.path.join(out, "train_list.txt")
    write_label_list(train, [records[i] for i in keep])
    logger.info("teacher list: %d labeled training images (%s), same image files as the student's",
                len(keep), train)
    return {"image_root": student["image_root"], "train": train, "val": student["val"], "labels": student["labels"],
            "count": int(len(keep))}
