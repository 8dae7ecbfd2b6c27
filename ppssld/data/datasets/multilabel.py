"""MultiLabelDataset: PaddleClas's multi-label lists (``path<TAB>0,1,0,...``), e.g. PULC attributes.

List rules (every problem names ``file:line``):

* ``path`` then whitespace (PaddleClas writes a TAB) then the labels, comma-separated, one per
  class: ``1`` (present), ``0`` (absent) or ``-1`` (unknown: excluded from losses and metrics).
  The labels field is the last one, so paths may hold spaces.
* A line with only a path (or whose labels are all ``-1``) is an unlabeled image: its label row is
  all ``-1``; multi-label losses and metrics skip it, soft (teacher) losses still use it.
* Every row has the same number of labels (``class_num`` when the model's class count is known).

A sample's label is ``float32 [C]``; with ``label_ratio: True`` it is ``[2, C]``: the labels and
the fraction of positives of each class over the list (PaddleClas's ``label_ratio`` used by
``MultiLabelLoss.weight_ratio``), counted over known entries only.
"""
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from ppssld.data.datasets.imagenet import ImageNetDataset, PathList
from ppssld.data.lists.label_list import (UNLABELED, Problem, Record, as_path_list, check_records, count_repeats,
                                    format_problems, looks_like_image)
from ppssld.data.transforms import build_transforms
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.registry import DATASETS

logger = logging.getLogger(__name__)

ALLOWED = (-1, 0, 1)
_LABELS = re.compile(r"^[+-]?\d+(\s*,\s*[+-]?\d+)*$")


def parse_multilabel_line(text: str, delimiter: Optional[str] = None) -> Tuple[str, Optional[Tuple[int, ...]]]:
    """Split one list line into ``(path, labels)``; labels None for a path-only line.

    Raises:
        ValueError: a malformed labels field, with what would be right.
    """
    line = text.strip()
    sep = delimiter or ("\t" if "\t" in line else None)
    parts = line.rsplit(sep, 1)
    if len(parts) == 1 or not _LABELS.match(parts[1].strip()):
        if len(parts) == 1 or looks_like_image(line):
            return line, None
        raise ValueError(f"labels field {parts[1].strip()!r} is not comma-separated integers; write "
                         f"'img.jpg<TAB>0,1,0' (1 present, 0 absent, -1 unknown)")
    path, field = parts[0].strip(), parts[1].strip()
    values = []
    for item in field.split(","):
        item = item.strip()
        if not item.lstrip("-").isdigit() or int(item) not in ALLOWED:
            raise ValueError(f"label field {field!r}: {item!r} is not 1, 0 or -1; write the labels comma-separated "
                             f"after a TAB, e.g. 'img.jpg\\t0,1,0' (1 present, 0 absent, -1 unknown)")
        values.append(int(item))
    return path, tuple(values)


Row = Tuple[str, Optional[Tuple[int, ...]], int]


def read_multilabel_list(path: str, delimiter: Optional[str] = None) -> Tuple[List[Row], List[Problem]]:
    """Rows ``(path, labels or None, line)`` of one list, and its problems."""
    if not os.path.isfile(path):
        raise DataError(f"label list {path!r} does not exist")
    rows, problems = [], []
    with open(path, "r", encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                image, labels = parse_multilabel_line(text, delimiter)
            except ValueError as exc:
                problems.append(Problem(path, number, str(exc)))
                continue
            rows.append((image, labels, number))
    return rows, problems


@DATASETS.register(name="MultiLabelDataset")
class MultiLabelDataset(ImageNetDataset):
    """Images with one 0/1/-1 label per class, from PaddleClas multi-label lists.

    Args:
        image_root: folder the list paths are relative to.
        cls_label_path: the list file(s).
        transform_ops: PaddleClas transform list.
        label_ratio: also return each class's positive fraction (sample label ``[2, C]``).
        class_num: when given, every row must hold this many labels.
        skip_bad_images / delimiter / check_images_exist: as :class:`ImageNetDataset`.
    """

    def __init__(self, image_root: str, cls_label_path: PathList, transform_ops: Optional[List[Any]] = None,
                 label_ratio: bool = False, class_num: Optional[int] = None, skip_bad_images: bool = False,
                 delimiter: Optional[str] = None, check_images_exist: bool = True) -> None:
        paddle.io.Dataset.__init__(self)
        if not isinstance(image_root, str) or not os.path.isdir(image_root):
            raise DataError(f"image_root {image_root!r} is not a folder; it must hold the images the lists name")
        if class_num is not None and (not isinstance(class_num, int) or class_num < 1):
            raise ConfigError(f"class_num must be a positive int, got {class_num!r}")
        lists = as_path_list(cls_label_path, "cls_label_path")
        if not lists:
            raise ConfigError("give cls_label_path: the multi-label list(s)")
        self.image_root, self.class_num = image_root, class_num
        self.skip_bad_images = bool(skip_bad_images)
        self.transform = build_transforms(transform_ops, "transform_ops")
        records, problems = self._read(lists, delimiter)
        width = class_num or next((len(labels) for _, labels, _, _ in records if labels is not None), None)
        table: Dict[Tuple[int, ...], int] = {}
        for (image, labels, source, line) in records:
            if labels is not None and width is not None and len(labels) != width:
                problems.append(Problem(source, line, f"{len(labels)} labels, expected {width} "
                                        f"({'class_num' if class_num else 'as the first labeled row'}); "
                                        f"one label per class"))
        self.records = [Record(image, UNLABELED if labels is None or all(v == -1 for v in labels)
                               else table.setdefault(labels, len(table)), source, line)
                        for image, labels, source, line in records]
        problems += check_records(self.records, image_root, None, check_images_exist)
        if problems:
            raise DataError(format_problems(problems, f"multi-label dataset under image_root {image_root}"))
        if width is None:
            raise DataError(f"multi-label lists {', '.join(lists)} hold no labeled row: the class count is unknown")
        self.num_classes = width
        self.targets = np.full((len(records), width), -1.0, dtype=np.float32)
        for i, (_, labels, _, _) in enumerate(records):
            if labels is not None:
                self.targets[i] = labels
        self.label_ratio = self._ratio() if label_ratio else None
        self.num_labeled = sum(1 for r in self.records if r.label != UNLABELED)
        self.num_unlabeled = len(self.records) - self.num_labeled
        self.num_repeated = count_repeats(self.records, image_root)
        self.labels = np.array([r.label for r in self.records], dtype=np.int64)
        self._init_runtime()
        logger.info("multi-label dataset %s: %d images (%d labeled, %d unlabeled), %d classes, from %s",
                    image_root, len(self.records), self.num_labeled, self.num_unlabeled, width, ", ".join(lists))

    @staticmethod
    def _read(lists: Sequence[str], delimiter: Optional[str]) -> tuple:
        records, problems = [], []
        for path in lists:
            rows, probs = read_multilabel_list(path, delimiter)
            problems += probs
            records += [(image, labels, path, line) for image, labels, line in rows]
        return records, problems

    def _ratio(self) -> np.ndarray:
        known = self.targets >= 0
        positives = (self.targets == 1).sum(axis=0).astype(np.float64)
        return (positives / np.maximum(known.sum(axis=0), 1)).astype(np.float32)

    def target(self, index: int) -> np.ndarray:
        labels = self.targets[index]
        return labels if self.label_ratio is None else np.stack([labels, self.label_ratio])

    def unlabeled_target(self) -> np.ndarray:
        labels = np.full(self.num_classes, -1.0, dtype=np.float32)
        return labels if self.label_ratio is None else np.stack([labels, self.label_ratio])
