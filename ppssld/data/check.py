"""Pre-flight scan: check every list and read every listed image once, reporting all problems together.

Images are read, decoded and (when the dataset's ``transform_ops`` are given) transformed by
:mod:`ppssld.data.image`, the code training uses, so an image that passes here loads in training.
"""
import functools
import json
import logging
import multiprocessing
import os
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from ppssld.data.image import decode_backend, read_bytes, transform_image
from ppssld.data.lists.label_list import Problem, Record, as_path_list, count_repeats, load_records, resolve
from ppssld.data.transforms import Compose, ImageDecodeError, build_transforms, decode_image
from ppssld.utils.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
LIST_KEYS = ("image_root", "cls_label_path", "unlabeled_label_path", "class_num", "delimiter",
             "unlabeled_ignore_labels", "relabel", "transform_ops")
_CHAINS: Dict[str, Compose] = {}  # per process: transform lists built once (workers receive the plain list)


def _chain(transform_ops: Optional[List[Any]]) -> Optional[Compose]:
    if transform_ops is None:
        return None
    key = json.dumps(transform_ops, sort_keys=True, default=str)
    if key not in _CHAINS:
        _CHAINS[key] = build_transforms(transform_ops, "transform_ops")
    return _CHAINS[key]


def check_image_file(path: str, transform_ops: Optional[List[Any]] = None) -> Optional[str]:
    """Read and decode one image as training would, and run the dataset's transforms on it when given.

    Args:
        path: the image file.
        transform_ops: the dataset's ``transform_ops`` (random ops draw from a fixed seed).
    Returns:
        None when fine, else what is wrong.
    """
    chain = _chain(transform_ops)
    try:
        data = read_bytes(path)
    except ImageDecodeError as exc:
        return f"cannot be read ({exc.__cause__.strerror if isinstance(exc.__cause__, OSError) else exc})"
    try:
        img = decode_image(data, decode_backend(chain))
    except ImageDecodeError as exc:
        return f"corrupt or not an image: {exc}"
    if data.startswith(_JPEG_START) and not data.rstrip(b"\x00\r\n ").endswith(_JPEG_END):
        return "truncated JPEG (no end-of-image marker): it decodes with a grey lower part"
    if min(img.shape[:2]) < 1:
        return f"decodes to an empty image {img.shape}"
    if chain is not None:
        try:
            transform_image(img, chain, random.Random(0))
        except DataError as exc:
            return f"the transforms fail on it: {exc}"
    return None


def _check_one(item: Tuple[str, str, int], transform_ops: Optional[List[Any]] = None) -> Optional[Problem]:
    path, source, line = item
    message = check_image_file(path, transform_ops)
    return None if message is None else Problem(source, line, f"image {path}: {message}")


def scan_images(items: Sequence[Tuple[str, str, int]], workers: int = 2, desc: str = "images",
                transform_ops: Optional[List[Any]] = None) -> List[Problem]:
    """Decode (and transform) every image, in ``workers`` processes, with a progress bar.

    Args:
        items: ``(full_path, list_file, line)`` triples.
        workers: processes (0 or 1: in this process).
        desc: progress bar label.
        transform_ops: the dataset's transforms, run on each image when given.
    Returns:
        One problem per unreadable or corrupt image, in list order.
    """
    chunk = max(1, min(256, len(items) // max(1, workers * 8)))
    check = functools.partial(_check_one, transform_ops=transform_ops)
    if workers <= 1:
        results = [check(item) for item in tqdm(items, desc=desc, unit="img", disable=None)]
    else:
        with multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap(check, items, chunksize=chunk), total=len(items), desc=desc,
                                unit="img", disable=None))
            pool.close()
            pool.join()
    return [r for r in results if r is not None]


def check_dataset(image_root: str, cls_label_path: Any = None, unlabeled_label_path: Any = None,
                  class_num: Optional[int] = None, delimiter: Optional[str] = None,
                  unlabeled_ignore_labels: bool = False, relabel: bool = False, workers: int = 2,
                  name: str = "dataset", transform_ops: Optional[List[Any]] = None) -> Dict[str, Any]:
    """Check the lists of one dataset and every image they name (each image once, however often listed).

    Args:
        image_root, cls_label_path, unlabeled_label_path, class_num, delimiter, unlabeled_ignore_labels,
            relabel, transform_ops: as :class:`ppssld.data.datasets.imagenet.ImageNetDataset`.
        workers: decoding processes.
        name: label for the report.
    Returns:
        ``{"name", "images", "labeled", "unlabeled", "repeated", "problems": [str, ...]}``; ``images``
        counts list rows (samples), ``repeated`` the rows that repeat an earlier image.
    """
    if transform_ops is not None:
        _chain(transform_ops)  # a bad list is a ConfigError here, not one problem per image
    problems: List[Problem] = []
    if not isinstance(image_root, str) or not os.path.isdir(image_root):
        problems.append(Problem(str(image_root), 0, "image_root is not a folder"))
        records: List[Record] = []
    else:
        records, problems = load_records(image_root, as_path_list(cls_label_path, "cls_label_path"),
                                         as_path_list(unlabeled_label_path, "unlabeled_label_path"), class_num,
                                         delimiter, unlabeled_ignore_labels, True, relabel)
    missing = {(p.source, p.line) for p in problems}
    items, seen = [], set()
    for rec in records:
        full = resolve(image_root, rec.path)
        if full is not None and (rec.source, rec.line) not in missing and full not in seen:
            seen.add(full)
            items.append((full, rec.source, rec.line))
    problems += scan_images(items, workers, desc=name, transform_ops=transform_ops)
    labeled = sum(1 for r in records if r.label >= 0)
    repeated = count_repeats(records, image_root) if records else 0
    return {"name": name, "images": len(records), "labeled": labeled, "unlabeled": len(records) - labeled,
            "repeated": repeated, "problems": [str(p) for p in problems]}


def datasets_from_config(config: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """``(where, list keys and transforms)`` of each ``DataLoader.<mode>.dataset`` in a loaded config.

    Raises:
        ConfigError: a dataset without ``image_root``, or a bad transform list (naming its key).
    """
    found = []
    arch_classes = (config.get("Arch") or {}).get("class_num")
    for mode in ("Train", "Eval"):
        cfg = ((config.get("DataLoader") or {}).get(mode) or {}).get("dataset")
        if not cfg:
            continue
        if "image_root" not in cfg:
            raise ConfigError(f"DataLoader.{mode}.dataset has no image_root")
        keys = {k: cfg[k] for k in LIST_KEYS if k in cfg}
        if keys.get("transform_ops") is not None:
            build_transforms(keys["transform_ops"], f"DataLoader.{mode}.dataset.transform_ops")
        if keys.get("class_num") is None and isinstance(arch_classes, int):
            keys["class_num"] = arch_classes
        found.append((f"DataLoader.{mode}.dataset", keys))
    if not found:
        raise ConfigError("the config has no DataLoader.Train.dataset or DataLoader.Eval.dataset to check")
    return found


def format_reports(reports: List[Dict[str, Any]], max_print: int = 50, saved: bool = False) -> str:
    """The console summary of :func:`check_dataset` reports: one line per dataset, then its problems.

    Args:
        reports: the reports.
        max_print: problems listed per dataset.
        saved: whether the full report was also written to a file (mentioned when lines are cut).
    Returns:
        The text.
    """
    lines = []
    for rep in reports:
        problems = rep["problems"]
        status = "OK" if not problems else f"{len(problems)} problem(s)"
        repeated = f", {rep['repeated']} repeated line(s)" if rep.get("repeated") else ""
        lines.append(f"{rep['name']}: {rep['images']} images ({rep['labeled']} labeled, {rep['unlabeled']} "
                     f"unlabeled{repeated}): {status}")
        lines += [f"  {line}" for line in problems[:max_print]]
        if len(problems) > max_print:
            lines.append(f"  ... and {len(problems) - max_print} more" + (" (see --report)" if saved else ""))
    return "\n".join(lines)
