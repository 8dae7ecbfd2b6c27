"""The main job's soft-label cache glue: a distillation stage with ``<stage>.soft_label_cache: true`` first
writes its frozen teacher's softmax into ``<stage folder>/soft_labels`` (V = the stage's epochs, K = the
class count, float32: the cache's exactness contract, so the student trains as it would online), then
trains with ``Global.soft_label_cache`` pointing there (the teacher is neither built nor run).

Generation resumes chunk by chunk (an interrupted stage re-run with the same inputs finishes the cache);
a stage whose inputs changed is set aside with its cache by the pipeline, so a cache never outlives its
teacher, lists or transforms (and training refuses a stale one anyway, see :mod:`ppssld.cache.manifest`).
"""
import logging
import os
from typing import Any, Dict

from ppssld.utils.config import get
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

FOLDER = "soft_labels"
KEY = "soft_label_cache"  # the pipeline key of the distill and finetune sections


def wants_cache(section: Dict[str, Any], stage: str) -> bool:
    """``<stage>.soft_label_cache`` (default false).

    Raises:
        ConfigError: a value other than true or false.
    """
    value = (section or {}).get(KEY, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{stage}.{KEY} must be true or false, got {value!r}")
    return value


def stage_settings(section: Dict[str, Any], cache: bool = True) -> Dict[str, Any]:
    """A training section as fingerprinted: ``soft_label_cache: false`` (the default) left out, so writing it out
    re-runs nothing; ``cache=False``: the key left out whatever its value (mining does not read it)."""
    return {k: v for k, v in section.items() if k != KEY or (cache and v is not False)}


def cache_teacher(config: Dict[str, Any], stage_dir: str) -> Dict[str, Any]:
    """Write (or finish) the soft-label cache of ``config`` (the stage's online training config, not
    mutated) in ``<stage_dir>/soft_labels``: V = ``Global.epochs``, K = the teacher's class count, float32.

    Returns:
        ``{"dir", "views", "topk", "images", "seconds"}`` (images and seconds of this call's generation).
    Raises:
        ConfigError: a config the cache cannot stand in for (see :mod:`ppssld.cache.rules`).
    """
    from ppssld.cache.generate import generate
    from ppssld.cache.manifest import class_count, teacher_entry
    from ppssld.engine.distributed import use_device

    folder = os.path.join(stage_dir, FOLDER)
    views = int(get(config, "Global.epochs"))
    _name, entry, _weights = teacher_entry(config)
    topk = class_count(entry, config)
    use_device(get(config, "Global.device"))
    stats = generate(config, folder, views, topk, prob_dtype="float32")
    logger.info("soft-label cache %s: %d views x top-%d written for %d images in %.1f s (%d chunks were already "
                "there); training reads it instead of running the teacher", folder, views, topk,
                stats["images_now"], stats["seconds"], stats["done_before"])
    return {"dir": folder, "views": views, "topk": topk, "images": stats["images_now"], "seconds": stats["seconds"]}
