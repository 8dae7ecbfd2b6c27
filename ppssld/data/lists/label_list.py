"""Label lists: ``relative/path label`` per line, PaddleClas style, with unlabeled rows.

Rules (the label is always the *last* field, so paths may hold spaces):

* ``path label`` with an integer label ``>= 0``: a labeled image.
* ``path -1`` or a line holding only a path: an unlabeled image (label ``-1``).
* In a list read as *unlabeled* (``unlabeled=True``) every row is unlabeled: a trailing integer
  other than ``-1`` is an error unless ``ignore_labels=True`` (for PaddleClas lists that mark
  unlabeled images with a dummy ``0``), and a non-integer last field is part of the path.
* In a labeled list, a non-integer last field is an error, unless the whole line ends with an
  image extension (then it is a path with spaces and no label).

Blank lines are skipped. A line may repeat (PaddleClas oversampling): each repeat is one more
sample; the same image with two different labels is an error. Every problem names ``file:line`` and what would be right.
"""
import logging
import os
import re
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

UNLABELED = -1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm",
                    ".pgm", ".pbm", ".jfif")
MAX_LISTED = 20
_INT = re.compile(r"^[+-]?\d+$")


class Record(NamedTuple):
    """One row of a label list.

    Attributes:
        path: the image path as written (relative to ``image_root``).
        label: class index, or -1 for an unlabeled image.
        source: the list file it came from.
        line: 1-based line number in ``source``.
    """
    path: str
    label: int
    source: str
    line: int


class Problem(NamedTuple):
    """One problem found in a list or an image, with its location."""
    source: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.message}"


def format_problems(problems: Sequence[Problem], header: str, limit: int = MAX_LISTED) -> str:
    """One readable message for many problems (the first ``limit`` spelt out).

    Args:
        problems: what was found.
        header: first line of the message.
        limit: how many to list in full.
    Returns:
        A multi-line message.
    """
    lines = [f"{header}: {len(problems)} problem(s)"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more; run tools/check_data.py for the full report")
    return "\n".join(lines)


def looks_like_image(text: str) -> bool:
    return text.lower().endswith(IMAGE_EXTENSIONS)


def parse_line(text: str, unlabeled: bool = False, ignore_labels: bool = False,
               delimiter: Optional[str] = None) -> Tuple[str, int, Optional[str]]:
    """Split one non-blank line into (path, label, problem).

    Args:
        text: the line without its newline.
        unlabeled: the line comes from an unlabeled list.
        ignore_labels: in an unlabeled list, drop any integer label instead of refusing it.
        delimiter: split on this string (PaddleClas ``delimiter``); default: any whitespace.
    Returns:
        ``(path, label, problem)``; ``problem`` is None when the line is fine.
    """
    line = text.strip()
    if delimiter is not None and delimiter.strip():
        parts = line.rsplit(delimiter, 1)
        head, last = (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else (line, None)
    else:
        match = re.match(r"^(.*\S)\s+(\S+)$", line)
        head, last = (match.group(1), match.group(2)) if match else (line, None)
    if last is None:
        return line, UNLABELED, None
    if not _INT.match(last):
        if unlabeled or looks_like_image(line):
            return line, UNLABELED, None
        return head, UNLABELED, (f"label {last!r} is not an integer; write 'relative/path label' with an "
                                 f"integer label (0 .. class_num-1), or only the path (or label -1) for an "
                                 f"unlabeled image")
    label = int(last)
    if unlabeled and label != UNLABELED:
        if ignore_labels:
            return head, UNLABELED, None
        return head, UNLABELED, (f"label {label} in an unlabeled list; unlabeled lists hold paths only (or "
                                 f"label -1). If this is a PaddleClas list that marks unlabeled images with a "
                                 f"dummy label, set unlabeled_ignore_labels: true")
    if label < UNLABELED:
        return head, UNLABELED, (f"label {label} is negative; labels are 0 .. class_num-1, "
                                 f"and -1 (or no label) marks an unlabeled image")
    return head, label, None


def read_label_list_with_problems(path: str, unlabeled: bool = False, ignore_labels: bool = False,
                                  delimiter: Optional[str] = None) -> Tuple[List[Record], List[Problem]]:
    """Read a list, collecting every problem instead of stopping at the first.

    Args:
        path: the list file.
        unlabeled: read it as an unlabeled list (every row gets label -1).
        ignore_labels: see :func:`parse_line`.
        delimiter: see :func:`parse_line`.
    Returns:
        ``(records, problems)``; rows with problems are left out of ``records``.
    """
    if not os.path.isfile(path):
        return [], [Problem(path, 0, "label list does not exist (check the path in the config)")]
    records: List[Record] = []
    problems: List[Problem] = []
    dropped = 0
    with open(path, "rb") as handle:
        raw_lines = handle.read().split(b"\n")
    for number, raw in enumerate(raw_lines, start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(path, number, f"line is not valid UTF-8 ({exc.reason}); save the list as UTF-8"))
            continue
        if not text.strip():
            continue
        img, label, problem = parse_line(text, unlabeled, ignore_labels, delimiter)
        if unlabeled and ignore_labels and img != text.strip() and not text.strip().endswith("-1"):
            dropped += 1
        if problem:
            problems.append(Problem(path, number, problem))
        else:
            records.append(Record(img, label, path, number))
    if not records and not problems:
        problems.append(Problem(path, 0, "label list is empty: expected one 'relative/path label' per line"))
    if dropped:
        logger.info("%s: ignored the labels of %d row(s) (read as unlabeled)", path, dropped)
    return records, problems


def read_label_list(path: str, unlabeled: bool = False, ignore_labels: bool = False,
                    delimiter: Optional[str] = None) -> List[Record]:
    """Read a list; raise on any problem.

    Args:
        path: the list file.
        unlabeled: read it as an unlabeled list (every row gets label -1).
        ignore_labels: in an unlabeled list, drop integer labels (PaddleClas dummy ``0``).
        delimiter: field separator; default any whitespace.
    Returns:
        The records, in file order.
    Raises:
        DataError: listing every problem as ``file:line: what is wrong``.
    """
    records, problems = read_label_list_with_problems(path, unlabeled, ignore_labels, delimiter)
    if problems:
        raise DataError(format_problems(problems, f"label list {path}"))
    return records


def check_records(records: Sequence[Record], image_root: str, class_num: Optional[int] = None,
                  check_exists: bool = True) -> List[Problem]:
    """Check paths and labels of records read from one or more lists.

    Args:
        records: rows from :func:`read_label_list_with_problems`.
        image_root: the folder paths are relative to.
        class_num: labels must lie in ``[0, class_num)`` when given.
        check_exists: also check that every image file exists.
    Returns:
        Problems: label out of range, path escaping ``image_root``, one image given two different
        labels, missing image. A line repeated unchanged is no problem: PaddleClas users oversample
        images this way, and each repeat is one more sample.
    """
    problems: List[Problem] = []
    seen: dict = {}        # image -> its first row
    labeled_at: dict = {}  # image -> its first labeled row
    root = os.path.normpath(os.path.abspath(image_root))
    for rec in records:
        if class_num is not None and rec.label >= class_num:
            problems.append(Problem(rec.source, rec.line, f"label {rec.label} is outside [0, {class_num}); "
                                    f"class_num is {class_num}, so labels run 0 .. {class_num - 1}"))
        full = resolve(image_root, rec.path)
        if full is None:
            problems.append(Problem(rec.source, rec.line, f"path {rec.path!r} escapes image_root {image_root!r}; "
                                    f"paths must be relative and stay inside image_root (no '../', no absolute "
                                    f"paths outside it)"))
            continue
        key = os.path.relpath(full, root)
        labeled = labeled_at.get(key)
        if rec.label != UNLABELED and labeled is not None and labeled.label != rec.label:
            problems.append(Problem(rec.source, rec.line, f"path {rec.path!r} has label {rec.label} here but "
                                    f"label {labeled.label} at {labeled.source}:{labeled.line}; an image has one "
                                    f"label (repeat a line unchanged to oversample an image)"))
        if rec.label != UNLABELED and labeled is None:
            labeled_at[key] = rec
        if key in seen:
            continue  # a repeated line is one more sample of the same image (PaddleClas oversampling)
        seen[key] = rec
        if check_exists and not os.path.isfile(full):
            what = "is a folder, not an image" if os.path.isdir(full) else "does not exist"
            problems.append(Problem(rec.source, rec.line, f"image {full!r} {what}; paths are relative to "
                                    f"image_root {image_root!r}"))
    return problems


def count_repeats(records: Sequence[Record], image_root: str) -> int:
    """How many rows name an image an earlier row already named (each repeat is one more sample).

    Args:
        records: rows of one or more lists.
        image_root: the folder paths are relative to (``a.jpg`` and ``./a.jpg`` are the same image).
    Returns:
        ``len(records)`` minus the number of distinct images.
    """
    return len(records) - len({resolve(image_root, r.path) or r.path for r in records})


def resolve(image_root: str, path: str) -> Optional[str]:
    """Join ``path`` to ``image_root``; None when the result would leave ``image_root``.

    Args:
        image_root: the root folder.
        path: the path as written in a list.
    Returns:
        The normalised full path, or None.
    """
    root = os.path.normpath(os.path.abspath(image_root))
    full = os.path.normpath(os.path.join(root, path))
    if full != root and not full.startswith(root + os.sep):
        return None
    return full


def format_record(path: str, label: Optional[int]) -> str:
    """One list line; ``label`` None or -1 writes an unlabeled row.

    Raises:
        DataError: a path with a newline, or one that would not read back as written.
    """
    if "\n" in path or "\r" in path or path != path.strip() or not path:
        raise DataError(f"cannot write path {path!r} to a label list (empty, newline or outer whitespace)")
    if label is None or label == UNLABELED:
        if re.search(r"\s", path) and not looks_like_image(path):
            return f"{path} {UNLABELED}"
        return path
    if label < 0:
        raise DataError(f"cannot write label {label} for {path!r}: labels are >= 0, or -1 for unlabeled")
    return f"{path} {int(label)}"


def write_label_list(path: str, rows: Iterable[Union[Record, Tuple[str, Optional[int]]]]) -> int:
    """Write a list atomically.

    Args:
        path: destination file.
        rows: ``(relative_path, label)`` pairs or :class:`Record` s; label None/-1 = unlabeled.
    Returns:
        Number of rows written.
    """
    lines = [format_record(str(row[0]), None if row[1] is None else int(row[1])) for row in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def as_path_list(value: Union[str, Sequence[str], None], key: str) -> List[str]:
    """A path or list of paths (None = none) as a list; ConfigError otherwise."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{key} must be a path or a list of paths, got {value!r}")


def load_records(image_root: str, labeled_lists: Sequence[str], unlabeled_lists: Sequence[str],
                 class_num: Optional[int] = None, delimiter: Optional[str] = None,
                 unlabeled_ignore_labels: bool = False, check_exists: bool = True,
                 relabel: bool = False) -> Tuple[List[Record], List[Problem]]:
    """Read and check every list; return all records and all problems.

    Args:
        image_root: folder the paths are relative to.
        labeled_lists: labeled list files.
        unlabeled_lists: unlabeled list files.
        class_num: label bound, when known.
        delimiter: field separator.
        unlabeled_ignore_labels: read labels in unlabeled lists as -1.
        check_exists: stat every image.
        relabel: map the distinct labels to 0..K-1.
    Returns:
        ``(records, problems)``.
    """
    records: List[Record] = []
    problems: List[Problem] = []
    for path in labeled_lists:
        recs, probs = read_label_list_with_problems(path, False, False, delimiter)
        records += recs
        problems += probs
    for path in unlabeled_lists:
        recs, probs = read_label_list_with_problems(path, True, unlabeled_ignore_labels, delimiter)
        records += recs
        problems += probs
    if relabel:
        mapping = {old: new for new, old in enumerate(sorted({r.label for r in records if r.label != UNLABELED}))}
        records = [r._replace(label=mapping.get(r.label, UNLABELED)) for r in records]
    problems += check_records(records, image_root, class_num, check_exists)
    return records, problems
