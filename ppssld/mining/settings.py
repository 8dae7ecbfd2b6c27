"""The ranges of mining's settings, checked before any image is read: one message naming the setting.

The same rules serve ``tools/select_unlabeled.py`` (the settings named as its arguments, ``--k``) and the
main job's ``mine`` section (named ``mine.k``, the default), so a value out of range never reaches the
library code below (``StreamingTopK`` would raise a bare ``ValueError`` for ``k = 0``).
"""
import math
import os
from typing import Any, Dict, Optional

from ppssld.mining.dedup import near_duplicates as dedup
from ppssld.utils.errors import ConfigError, DataError, OutputError

# how select_unlabeled.py names each setting of :func:`ppssld.mining.mine.mine`
ARGUMENTS = {"k": "--k", "topn": "--topn", "batch_size": "--batch-size", "chunk_size": "--chunk-size",
             "min_conf": "--min-conf", "cap": "--cap", "feature_threshold": "--feature-threshold",
             "hash_threshold": "--hash-threshold", "pixel_thresholds": "--pixel-thresholds",
             "image_root": "--image-root", "out": "--out"}
HASH_BITS = dedup.DEFAULT_HASH_SIZE ** 2


def _whole(value: Any, low: int, high: Optional[int] = None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high))


def _real(value: Any, low: float, high: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


# setting -> (check, what would be right)
RULES = {
    "k": (lambda v: _whole(v, 1), "a whole number >= 1 (images kept per class)"),
    "topn": (lambda v: _whole(v, 1), "a whole number >= 1 (teacher probabilities stored per image)"),
    "batch_size": (lambda v: _whole(v, 1), "a whole number >= 1 (images per teacher forward pass)"),
    "chunk_size": (lambda v: _whole(v, 1), "a whole number >= 1 (images per score file)"),
    "min_conf": (lambda v: _real(v, 0.0, 1.0), "a probability from 0 to 1"),
    "cap": (lambda v: v is None or _whole(v, 1), "a whole number >= 1 (leave it out for no cap)"),
    "feature_threshold": (lambda v: v is None or _real(v, -1.0, 1.0), "a cosine from -1 to 1 (leave it out: off)"),
    "hash_threshold": (lambda v: _whole(v, 0, HASH_BITS), f"a whole number of bits from 0 to {HASH_BITS}"),
    "pixel_thresholds": (lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) == 2
                                                 and all(_real(x, -1.0, 1.0) for x in v)),
                         "two correlations from -1 to 1 (HIGH BAND)"),
}


def check_settings(values: Dict[str, Any], names: Optional[Dict[str, str]] = None) -> None:
    """Refuse a mining setting out of range.

    Args:
        values: setting -> value (keys of :data:`RULES`; others are not checked here).
        names: setting -> how the user gave it (default ``mine.<setting>``, the main job's keys).
    Raises:
        ConfigError: naming the setting, the value and what would be right.
    """
    for key, value in values.items():
        if key not in RULES:
            continue
        check, right = RULES[key]
        if not check(value):
            name = (names or {}).get(key, f"mine.{key}")
            shown = list(value) if isinstance(value, tuple) else value
            raise ConfigError(f"{name} must be {right}, got {shown!r}")


def check_teacher_source(inference_model: Optional[str], weights: Optional[str], backbone: Optional[str]) -> None:
    """select_unlabeled.py's teacher: the config's, ``--inference-model``, or ``--teacher-weights`` with
    ``--teacher-backbone``; a half or a double choice is refused rather than silently resolved.

    Raises:
        ConfigError: naming the arguments.
    """
    if inference_model and (weights or backbone):
        raise ConfigError("--inference-model and --teacher-weights/--teacher-backbone both name a teacher: give "
                          "one of them")
    if bool(weights) != bool(backbone):
        given, missing = ("--teacher-weights", "--teacher-backbone") if weights else \
            ("--teacher-backbone", "--teacher-weights")
        raise ConfigError(f"{given} needs {missing} too (the zoo backbone, e.g. ResNet50_vd, and its weights file)")


def check_folders(image_root: Optional[str], out: str, names: Optional[Dict[str, str]] = None) -> None:
    """The folder the pool's paths are relative to must exist, and the output must be a folder (or absent).

    Raises:
        DataError / OutputError: naming the argument.
    """
    names = names or {}
    if image_root is not None and not os.path.isdir(image_root):
        raise DataError(f"{names.get('image_root', 'the image root')} {image_root!r} is not a folder (the folder "
                        f"the pool, eval and train lists' paths are relative to)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"{names.get('out', 'mining output')} {out!r} is a file; the output must be a folder "
                          f"(selected_list.txt, report.json, scores/ are written there)")
