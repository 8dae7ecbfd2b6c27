"""Train from a soft-label cache (``Global.soft_label_cache: DIR``) instead of running the teacher.

* The DistillationModel holds, under the teacher's name, a :class:`CachedTeacher`: no weights, no
  forward pass; it returns the cached distribution of the batch as ``log p`` (softmax-based losses
  read the teacher only through ``softmax(logits / T)``, which equals ``softmax(log p / T)``).
* Training epoch ``e`` (1-based) reads view :func:`view_for_epoch` ``(e)``: with V >= epochs that
  is ``e - 1``, i.e. exactly the image online training draws in epoch ``e``; beyond that, each
  further cycle of V epochs visits the V views in a fresh order drawn from ``(seed, cycle)``.
  The dataset applies that view's transform (its augmentation key is ``view + 1``) and returns, as each
  sample's third field, that image's cached teacher output (:class:`CachedRows`, computed where the sample is
  read: a loader worker, or the reading thread with ``num_workers: 0``); :class:`CachedLoader` hands the
  batch's field to the teacher, so the training loop reads nothing back from the device for it.
* The distribution is rebuilt from the top-K (:func:`rebuild`): the mass the top-K leave out is
  spread evenly over the other classes (``spread``, the default; ``renormalise`` is kept for the
  measurement in ``benchmark/soft_label_cache.py``).
* An exact cache (K = class count, float32: manifest ``values: logits``) stores the teacher's logits;
  :class:`CachedTeacher` then returns them as stored, the very tensor online training's losses get.
"""
import logging
from typing import Any, Dict, Iterator, Optional

import numpy as np
import paddle
import paddle.nn as nn

from ppssld.cache.integrity import check_sizes
from ppssld.cache.manifest import check_matches, expected_fields, read_manifest, teacher_members
from ppssld.cache.rules import check_cacheable, check_losses
from ppssld.cache.store import ChunkReader
from ppssld.utils.config import get, global_seed
from ppssld.utils.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

REBUILD_MODES = ("spread", "renormalise")
DEFAULT_REBUILD = "spread"
LOG_FLOOR = -1.0e4  # "log 0": exp underflows to exactly 0 in float32 at any temperature >= 1e-2


def view_for_epoch(epoch: int, views: int, seed: int) -> int:
    """The view (0-based) training epoch ``epoch`` (1-based) reads.

    Epochs ``1..V`` read views ``0..V-1`` in order; each later cycle of V epochs reads a
    permutation of the V views drawn from ``(seed, cycle)`` (every view once per cycle).
    """
    e0 = int(epoch) - 1
    if e0 < 0:
        e0 = 0
    cycle, pos = divmod(e0, int(views))
    if cycle == 0:
        return pos
    return int(np.random.default_rng([int(seed) & 0xFFFFFFFF, cycle, 0x5C1E]).permutation(int(views))[pos])


class ViewKey:
    """Picklable ``epoch -> augmentation key`` for the dataset (loader worker processes get a copy)."""

    def __init__(self, views: int, seed: int) -> None:
        self.views, self.seed = int(views), int(seed)

    def __call__(self, epoch: int) -> int:
        return view_for_epoch(epoch, self.views, self.seed) + 1


def rebuild(probs: np.ndarray, classes: np.ndarray, class_num: int, mode: str = DEFAULT_REBUILD) -> np.ndarray:
    """The full ``(n, class_num)`` distribution from top-K ``probs`` and their ``classes``.

    ``spread``: the top-K keep their probabilities and the remaining mass ``1 - sum(top-K)`` is
    spread evenly over the other classes; ``renormalise``: the top-K are scaled to sum to 1 and
    the other classes get 0. With K = class count both return the stored probabilities.
    """
    if mode not in REBUILD_MODES:
        raise ConfigError(f"rebuild mode must be one of {REBUILD_MODES}, got {mode!r}")
    n, k = probs.shape
    probs = probs.astype(np.float32)
    out = np.zeros((n, class_num), np.float32)
    if mode == "spread" and k < class_num:
        rest = np.clip(1.0 - probs.sum(axis=1, keepdims=True), 0.0, None) / (class_num - k)
        out += rest
    elif mode == "renormalise" and k < class_num:
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-30)
    np.put_along_axis(out, classes.astype(np.int64), probs, axis=1)
    return out


def as_logits(dist: np.ndarray) -> np.ndarray:
    """``log p`` with zeros at :data:`LOG_FLOOR`: its softmax (at any temperature) is the distribution's."""
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(dist), LOG_FLOOR).astype(np.float32)


class SoftLabelCache:
    """An opened cache folder: its manifest and its memory-mapped chunks."""

    def __init__(self, root: str, mode: str = DEFAULT_REBUILD) -> None:
        self.root = root
        self.manifest = read_manifest(root)
        self.mode = mode
        m = self.manifest
        self.views, self.topk, self.class_num = int(m["views"]), int(m["topk"]), int(m["class_num"])
        self.values = m["values"]
        check_sizes(root, m)  # one stat per chunk file; each header is checked as its chunk is first opened
        layout = all(key in m for key in ("index_dtype", "prob_dtype"))
        self.reader = ChunkReader(root, int(m["chunk_size"]), int(m["num_images"]), m if layout else None)

    def __deepcopy__(self, memo: Dict[int, Any]) -> "SoftLabelCache":
        return self  # read-only: a model copy (EMA) shares the memory maps

    def distribution(self, view: int, indices: np.ndarray) -> np.ndarray:
        """The rebuilt teacher distribution ``(n, C)`` of images ``indices`` in ``view``."""
        probs, classes = self.reader.gather(view, indices)
        if self.values == "logits":
            probs = np.exp(probs - probs.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
        return rebuild(probs, classes, self.class_num, self.mode)

    def teacher_output(self, view: int, indices: np.ndarray) -> np.ndarray:
        """What :class:`CachedTeacher` returns for images ``indices`` in ``view``: the stored logits of an
        exact cache, else ``log`` of the rebuilt distribution (same softmax at any temperature)."""
        if self.values != "logits":
            return as_logits(self.distribution(view, indices))
        values, classes = self.reader.gather(view, indices)
        out = np.empty((values.shape[0], self.class_num), np.float32)
        np.put_along_axis(out, classes, values, axis=1)
        return out


class CachedTeacher(nn.Layer):
    """Stands in for the frozen teacher: returns the batch's cached ``log p`` (set by :class:`CachedLoader`)."""
    is_soft_label_cache = True

    def __init__(self, cache: SoftLabelCache) -> None:
        super().__init__()
        self.cache = cache
        self.current: Optional[paddle.Tensor] = None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.current is None or int(self.current.shape[0]) != int(x.shape[0]):
            raise DataError("the cached teacher has no soft labels for this batch: batches must come from the "
                            "training loader built with Global.soft_label_cache (evaluate the student alone)")
        return self.current


class CachedRows:
    """Picklable ``(augmentation key, image index) -> that image's cached teacher output`` (one row), computed
    where the sample is read (a loader worker, or the reading thread with ``num_workers: 0``): the batch then
    carries its teacher targets beside its images, with no device-to-host read of an index in the training loop."""

    def __init__(self, cache: SoftLabelCache) -> None:
        self.cache = cache

    def __call__(self, key: int, index: int) -> np.ndarray:
        return self.cache.teacher_output(int(key) - 1, np.array([index], np.int64))[0]  # key = view + 1


class CachedLoader:
    """Wraps the training loader: hands each batch's third field (its cached teacher outputs) to the teacher."""

    def __init__(self, loader: Any, sampler: Any, teacher: CachedTeacher, seed: int) -> None:
        self.loader, self.sampler, self.teacher, self.seed = loader, sampler, teacher, int(seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        for images, labels, targets in self.loader:
            self.teacher.current = targets
            yield images, labels
        self.teacher.current = None


def cache_dir(config: Dict[str, Any]) -> Optional[str]:
    """``Global.soft_label_cache`` or None."""
    value = get(config, "Global.soft_label_cache")
    if value in (None, "", False):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"Global.soft_label_cache must be a folder path (a cache written by "
                          f"tools/cache_soft_labels.py), got {value!r}")
    return value


def build_cached_model(config: Dict[str, Any], build_student: Any) -> nn.Layer:
    """The DistillationModel with a :class:`CachedTeacher` in place of the teacher.

    ``build_student(name)`` builds the trainable model(s) as online training would (weights
    included). The cache is opened and its manifest checked against the config's teacher,
    transforms, seed, lists and class count (the record order is checked in :func:`attach`).
    """
    from ppssld.arch.distillation import DistillationModel

    root = cache_dir(config)
    check_cacheable(config)
    name, members = teacher_members(config)
    cache = SoftLabelCache(root)
    check_matches(cache.manifest, expected_fields(config), root)
    models = {}
    for item in config["Arch"]["models"]:
        (key, _cfg), = item.items()
        if key in [m for m, _e, _w in members]:  # the teacher, or the ensemble at its first member's place
            models.setdefault(name, CachedTeacher(cache))
            continue
        models[key] = build_student(key)
    logger.info("Global.soft_label_cache=%s: the teacher %s is not built; its top-%d softmax over %d views is read "
                "from the cache (%d images)", root, name, cache.topk, cache.views, cache.manifest["num_images"])
    return DistillationModel(models, frozen=[name], infer_model_name=get(config, "Arch.infer_model_name"))


def attach(config: Dict[str, Any], model: nn.Layer, loader: Any, sampler: Any, loss_fn: Any) -> CachedLoader:
    """Point the training dataset at the cache's views and wrap the loader (see the module docstring).

    Raises:
        ConfigError: a stale cache (record order) or a loss that needs the teacher's raw outputs.
    """
    name, members = teacher_members(config)
    teacher = getattr(model, name)
    if not isinstance(teacher, CachedTeacher):
        raise ConfigError("Global.soft_label_cache is set but the model was not built from the cache")
    check_losses(getattr(loss_fn, "loss_func", []), name, absent=[m for m, _e, _w in members if m != name])
    dataset = loader.dataset
    cache = teacher.cache
    records = [r.path for r in dataset.records]
    check_matches(cache.manifest, expected_fields(config, records), cache.root)
    seed = global_seed(config)
    dataset.epoch_key = ViewKey(cache.views, seed)
    dataset.extra_field = CachedRows(cache)
    epochs = int(get(config, "Global.epochs", 1))
    if epochs > cache.views:
        logger.info("soft-label cache: %d epochs over %d views: views repeat after epoch %d (each cycle in an order "
                    "drawn from the seed)", epochs, cache.views, cache.views)
    return CachedLoader(loader, sampler, teacher, seed)


def drop_teacher_weights(config: Dict[str, Any], state: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A whole-DistillationModel state without the teacher's ``<Teacher>.*`` tensors (no teacher is built)."""
    if state is None:
        return None
    prefixes = tuple(m + "." for m, _e, _w in teacher_members(config)[1])
    kept = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    if len(kept) != len(state):
        logger.info("Global.pretrained_model: %d %s tensors not loaded (the teacher comes from the cache)",
                    len(state) - len(kept), ", ".join(p + "*" for p in prefixes))
    return kept
