"""ImageNetDataset: labeled and unlabeled label lists under one ``image_root``.

Every list problem (missing file, bad label, one image with two labels, path escaping the root,
empty list) is found when the dataset is built; undecodable images are found when read. A
repeated line is one more sample (PaddleClas oversampling). Unlabeled rows have label -1, so no
hard-label loss or metric reads them.
"""
import inspect
import logging
import multiprocessing
import os
import queue
import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import paddle

from ppssld.data.batch.ops import validate_batch_transform
from ppssld.data.lists.label_list import UNLABELED, as_path_list, count_repeats, format_problems, load_records, resolve
from ppssld.data.image import read_bytes, transform_image
from ppssld.data.transforms import Compose, ImageDecodeError, build_transforms, validate_transforms
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.registry import DATASETS

logger = logging.getLogger(__name__)

PathList = Union[str, Sequence[str], None]
REPORT_FIRST = 5
_MAX_SUBSTITUTE_TRIES = 16

# Read by the trainer (ppssld.data.batch.ops), not by the dataset.
BATCH_KEY = "batch_transform_ops"
# Keys of other PaddleClas datasets / loaders, with what to do instead.
UNSUPPORTED_KEYS = {
    "label_ratio": "label ratios belong to multi-label lists: use name: MultiLabelDataset",
    "sample_per_label": "PK sampling is for metric learning, which ppssld does not support",
    "backend": "set the decoding backend on DecodeImage (backend: cv2 | pil) instead",
}


class SampleError:
    """A DataError met in a loader worker process, returned in place of the sample.

    Raising in a worker makes Paddle re-raise a generic error in its reader thread, which dies; the
    loader's collate function turns this into an error batch that the main process raises as a
    :class:`DataError` with the original message (file and list line).
    """

    def __init__(self, message: str) -> None:
        self.message = message


@DATASETS.register(name="ImageNetDataset")
class ImageNetDataset(paddle.io.Dataset):
    """Images listed in label lists under ``image_root``.

    Args:
        image_root: folder the list paths are relative to.
        cls_label_path: labeled list(s); rows with no label or -1 are unlabeled.
        transform_ops: PaddleClas transform list (see :mod:`ppssld.data.transforms`).
        unlabeled_label_path: unlabeled list(s) (paths only, or label -1).
        class_num: when given, labels must lie in ``[0, class_num)``.
        skip_bad_images: replace undecodable images instead of stopping; they are counted and
            reported at the end of each epoch.
        delimiter: field separator of the lists (default: whitespace; the label is the last field).
        relabel: map the sorted distinct labels to 0..K-1 (PaddleClas ``relabel``).
        unlabeled_ignore_labels: read labels in the unlabeled lists as -1 (PaddleClas lists mark
            unlabeled images with a dummy ``0``).
        check_images_exist: check every listed file exists when building (one ``stat`` each).
    """

    def __init__(self, image_root: str, cls_label_path: PathList, transform_ops: Optional[List[Any]] = None,
                 unlabeled_label_path: PathList = None, class_num: Optional[int] = None,
                 skip_bad_images: bool = False, delimiter: Optional[str] = None, relabel: bool = False,
                 unlabeled_ignore_labels: bool = False, check_images_exist: bool = True) -> None:
        super().__init__()
        if not isinstance(image_root, str) or not os.path.isdir(image_root):
            raise DataError(f"image_root {image_root!r} is not a folder; it must hold the images the lists name")
        if class_num is not None and (not isinstance(class_num, int) or class_num < 1):
            raise ConfigError(f"class_num must be a positive int, got {class_num!r}")
        self.image_root = image_root
        self.class_num = class_num
        self.skip_bad_images = bool(skip_bad_images)
        self.transform: Compose = build_transforms(transform_ops, "transform_ops")
        labeled_lists = as_path_list(cls_label_path, "cls_label_path")
        unlabeled_lists = as_path_list(unlabeled_label_path, "unlabeled_label_path")
        if not labeled_lists and not unlabeled_lists:
            raise ConfigError("give cls_label_path (and/or unlabeled_label_path): the dataset has no list")
        self.records, problems = load_records(image_root, labeled_lists, unlabeled_lists, class_num,
                                              delimiter, unlabeled_ignore_labels, check_images_exist, relabel)
        if problems:
            raise DataError(format_problems(problems, f"dataset under image_root {image_root}"))
        self.num_labeled = sum(1 for r in self.records if r.label != UNLABELED)
        self.num_unlabeled = len(self.records) - self.num_labeled
        self.num_repeated = count_repeats(self.records, image_root)
        self.labels = np.array([r.label for r in self.records], dtype=np.int64)
        self._init_runtime()
        logger.info("dataset %s: %d images (%d labeled, %d unlabeled) from %s", image_root, len(self.records),
                    self.num_labeled, self.num_unlabeled, ", ".join(labeled_lists + unlabeled_lists))
        if self.num_repeated:
            logger.info("dataset %s: %d line(s) repeat an image listed before; each repeat is one more sample "
                        "(PaddleClas oversampling)", image_root, self.num_repeated)

    def _init_runtime(self) -> None:
        """Seed, epoch and the bad-image channels (shared by subclasses)."""
        self.seed: Optional[int] = None
        self.epoch = 0
        # soft-label cache (ppssld.cache.reader): epoch -> augmentation key, and a third batch field computed
        # from (augmentation key, index of the image actually read) where the sample is read (a loader worker)
        self.epoch_key: Optional[Callable[[int], int]] = None
        self.extra_field: Optional[Callable[[int, int], Any]] = None
        self._bad_count = multiprocessing.Value("q", 0) if self.skip_bad_images else None
        self._bad_queue = multiprocessing.Queue() if self.skip_bad_images else None
        self._bad_local: List[str] = []
        self._reported = 0
        self.last_bad_report: Tuple[int, List[str]] = (0, [])

    def __len__(self) -> int:
        return len(self.records)

    def set_seed(self, seed: Optional[int]) -> None:
        """Make augmentation a pure function of (seed, epoch, index); None = free-running."""
        self.seed = None if seed is None else int(seed)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used, with the seed, to derive each sample's augmentation RNG (through ``epoch_key``
        when a soft-label cache maps training epochs to its stored views)."""
        self.epoch = int(epoch) if self.epoch_key is None else int(self.epoch_key(int(epoch)))

    def full_path(self, index: int) -> str:
        """Absolute path of sample ``index``."""
        return resolve(self.image_root, self.records[index].path) or ""

    def _rng(self, index: int) -> Any:
        if self.seed is None:
            return random
        return random.Random(((self.seed & 0xFFFFFFFF) << 72) | ((self.epoch & 0xFFFFFFFF) << 40) | index)

    def load(self, index: int) -> np.ndarray:
        """Read and transform sample ``index`` into a CHW float32 array (:mod:`ppssld.data.image`).

        Raises:
            DataError: unreadable or undecodable image, naming the file and its list line.
        """
        rec = self.records[index]
        path = self.full_path(index)
        try:
            return transform_image(read_bytes(path), self.transform, self._rng(index))
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"image {path} (listed at {rec.source}:{rec.line}) cannot be read: {exc}. "
                                   f"Fix or remove it, set skip_bad_images: true to skip such images, or run "
                                   f"tools/check_data.py to find all of them") from exc
        except DataError as exc:
            raise DataError(f"image {path} (listed at {rec.source}:{rec.line}): {exc}") from exc

    def target(self, index: int) -> Any:
        """The label batch element of sample ``index`` (an int64 class, -1 = unlabeled)."""
        return np.int64(self.records[index].label)

    def unlabeled_target(self) -> Any:
        """The label given to a substitute for an unreadable image (no loss or metric counts it)."""
        return np.int64(UNLABELED)

    def sample(self, index: int) -> Tuple[np.ndarray, Any]:
        """``(network input, label)`` of sample ``index``."""
        return self.load(index), self.target(index)

    def __getitem__(self, index: int) -> Union[Tuple[Any, ...], SampleError]:
        try:
            image, target, source = self._sample_or_substitute(index)
            if self.extra_field is None:
                return image, target
            return image, target, self.extra_field(self.epoch, source)  # e.g. the cached teacher's output
        except DataError as exc:
            if paddle.io.get_worker_info() is not None:
                return SampleError(str(exc))  # in-band: see ppssld.data.loading.loader.collate
            raise

    def _sample_or_substitute(self, index: int) -> Tuple[np.ndarray, Any, int]:
        try:
            return (*self.sample(index), index)
        except ImageDecodeError:
            if not self.skip_bad_images:
                raise
            self._note_bad(self.full_path(index))
        # Substitute the next readable image with label -1, so no loss or metric counts it as the bad one.
        for step in range(1, _MAX_SUBSTITUTE_TRIES + 1):
            other = (index + step) % len(self.records)
            try:
                return self.load(other), self.unlabeled_target(), other
            except ImageDecodeError:
                continue
        raise DataError(f"image {self.full_path(index)} and the {_MAX_SUBSTITUTE_TRIES} images after it in the list "
                        f"are all unreadable; run tools/check_data.py")

    def _note_bad(self, path: str) -> None:
        logger.warning("skipping unreadable image %s", path)
        with self._bad_count.get_lock():
            self._bad_count.value += 1
        if paddle.io.get_worker_info() is None:
            self._bad_local.append(path)
        else:
            self._bad_queue.put(path)

    def bad_image_report(self) -> Tuple[int, List[str]]:
        """Bad images met since the previous call (count, first few paths); logs a warning when any.

        Returns:
            ``(count, paths)``; ``paths`` holds at most the first few.
        """
        if not self.skip_bad_images:
            return 0, []
        paths = list(self._bad_local)
        self._bad_local.clear()
        while True:
            try:
                paths.append(self._bad_queue.get(timeout=0.05))
            except queue.Empty:
                break
        total = int(self._bad_count.value)
        count, self._reported = total - self._reported, total
        if count:
            logger.warning("epoch %d: skipped %d unreadable image(s) (replaced by a neighbour with label -1); "
                           "first: %s", self.epoch, count, ", ".join(paths[:REPORT_FIRST]))
        self.last_bad_report = (count, paths[:REPORT_FIRST])
        return self.last_bad_report


def validate_dataset_config(cfg: Dict[str, Any], where: str = "DataLoader.Train.dataset") -> None:
    """Check a dataset mapping (name, keys, transforms) without touching files.

    Raises:
        ConfigError: unknown dataset or key (with the closest names), or a bad transform.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where} must be a mapping with a 'name', got {type(cfg).__name__}")
    if "name" not in cfg:
        raise ConfigError(f"{where} has no 'name' (e.g. name: ImageNetDataset)")
    kwargs = {k: v for k, v in cfg.items() if k not in ("name", BATCH_KEY)}
    if cfg.get(BATCH_KEY) is not None:
        if where.startswith("DataLoader.Eval"):
            raise ConfigError(f"{where}.{BATCH_KEY}: batch operators mix training batches only; remove the key here")
        validate_batch_transform(cfg[BATCH_KEY], f"{where}.{BATCH_KEY}")
    target = DATASETS.get(cfg["name"], where)
    params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
    for key, reason in UNSUPPORTED_KEYS.items():
        if key in kwargs and key not in params:
            raise ConfigError(f"{where}.{key}: {reason}")
    DATASETS.check_kwargs(cfg["name"], kwargs, where)
    missing = [n for n, p in params.items() if n != "self" and p.default is p.empty and n not in kwargs
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if missing:
        raise ConfigError(f"{where} is missing required key(s): {', '.join(missing)}")
    if "transform_ops" in kwargs:
        validate_transforms(kwargs["transform_ops"], f"{where}.transform_ops")


def build_dataset(dataset_cfg: Dict[str, Any], where: str = "DataLoader.Train.dataset") -> ImageNetDataset:
    """Build the dataset a config mapping describes.

    Args:
        dataset_cfg: ``{name: ImageNetDataset, image_root: ..., cls_label_path: ..., ...}``.
        where: config location for error messages.
    Returns:
        The dataset.
    """
    validate_dataset_config(dataset_cfg, where)
    kwargs = {k: v for k, v in dataset_cfg.items() if k not in ("name", BATCH_KEY)}
    try:
        return DATASETS.build(dataset_cfg["name"], kwargs, where)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
