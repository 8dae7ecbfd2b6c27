"""Multi-scale training (PaddleClas ``MultiScaleSampler`` + ``MultiScaleDataset``).

The sampler yields batches of ``(width, height, index)``; every batch has one resolution drawn from
``scales`` (rounded down to multiples of ``divided_factor``) and a batch size that keeps
``width * height * batch`` equal to the first scale's with ``first_bs``. The resolution plan of an
epoch is drawn once from the seed, so every epoch has the same number of steps (the LR schedule's);
the images are shuffled per (seed, epoch). The dataset resizes each sample to its batch's size by
setting ``size`` on its RandCropImage / ResizeImage / CropImage ops.
"""
import copy
import logging
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from ppssld.data.datasets.imagenet import ImageNetDataset
from ppssld.data.loading.sampler import epoch_permutation
from ppssld.data.transforms import Compose, build_transforms
from ppssld.utils import dist_env
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import DATASETS, SAMPLERS

logger = logging.getLogger(__name__)

RESIZING_OPS = ("RandCropImage", "ResizeImage", "CropImage")


@DATASETS.register(name="MultiScaleDataset")
class MultiScaleDataset(ImageNetDataset):
    """:class:`ImageNetDataset` whose items may be ``(width, height, index)``: the image is resized to that size.

    Args: as :class:`ImageNetDataset`; ``transform_ops`` must hold a RandCropImage, ResizeImage or CropImage.
    """

    def __init__(self, image_root: str, cls_label_path: Any, transform_ops: Optional[List[Any]] = None,
                 unlabeled_label_path: Any = None, class_num: Optional[int] = None, skip_bad_images: bool = False,
                 delimiter: Optional[str] = None, relabel: bool = False, unlabeled_ignore_labels: bool = False,
                 check_images_exist: bool = True) -> None:
        ops = transform_ops or []
        if not any(isinstance(op, dict) and next(iter(op)) in RESIZING_OPS for op in ops):
            raise ConfigError(f"MultiScaleDataset.transform_ops needs one of {', '.join(RESIZING_OPS)} (it gets each "
                              f"batch's size)")
        super().__init__(image_root, cls_label_path, transform_ops, unlabeled_label_path, class_num, skip_bad_images,
                         delimiter, relabel, unlabeled_ignore_labels, check_images_exist)
        self._ops_cfg = copy.deepcopy(ops)
        self._by_size: Dict[Tuple[int, int], Compose] = {}

    def transform_for(self, width: int, height: int) -> Compose:
        """The transform chain with every resizing op set to ``[width, height]`` (built once per size)."""
        key = (int(width), int(height))
        if key not in self._by_size:
            ops = copy.deepcopy(self._ops_cfg)
            for item in ops:
                name = next(iter(item)) if isinstance(item, dict) else item
                if name in RESIZING_OPS:
                    params = dict(item[name] or {})
                    params.pop("resize_short", None)
                    params["size"] = list(key)
                    item[name] = params
            self._by_size[key] = build_transforms(ops, "MultiScaleDataset.transform_ops")
        return self._by_size[key]

    def __getitem__(self, item: Any) -> Tuple[np.ndarray, np.int64]:
        if isinstance(item, (tuple, list)):
            width, height, index = item
            saved, self.transform = self.transform, self.transform_for(width, height)
            try:
                return super().__getitem__(int(index))
            finally:
                self.transform = saved
        return super().__getitem__(item)


def _scale_pairs(scales: Any) -> List[Tuple[int, int]]:
    if not isinstance(scales, (list, tuple)) or not scales:
        raise ConfigError(f"scales must be a non-empty list of sizes or [width, height] pairs, got {scales!r}")
    pairs = []
    for s in scales:
        if isinstance(s, int) and not isinstance(s, bool) and s > 0:
            pairs.append((s, s))
        elif isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s):
            pairs.append((int(s[0]), int(s[1])))
        else:
            raise ConfigError(f"scales: {s!r} is neither a positive int nor a [width, height] pair")
    return pairs


@SAMPLERS.register(name="MultiScaleSampler")
class MultiScaleSampler(paddle.io.BatchSampler):
    """Batches of ``(width, height, index)`` at a per-batch resolution (see the module docstring).

    Args:
        dataset: a :class:`MultiScaleDataset`.
        scales: sizes (int or [w, h]); the first one is the reference for the batch sizes.
        first_bs: batch size at the first scale.
        divided_factor: sizes are rounded down to multiples of it.
        is_training: False = only the first scale.
        shuffle: shuffle the images every epoch.
        seed / mode / num_replicas / rank: set by ppssld.
    """
    needs_batch_size = False

    def __init__(self, dataset: Any, scales: Sequence[Any], first_bs: int, divided_factor: int = 32,
                 is_training: bool = True, shuffle: bool = True, seed: int = 0, mode: str = "train",
                 num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        if not isinstance(dataset, MultiScaleDataset):
            raise ConfigError("MultiScaleSampler needs the dataset MultiScaleDataset (name: MultiScaleDataset)")
        if not isinstance(first_bs, int) or first_bs < 1 or not isinstance(divided_factor, int) or divided_factor < 1:
            raise ConfigError(f"first_bs and divided_factor must be positive ints, got {first_bs!r}, {divided_factor!r}")
        pairs = _scale_pairs(scales)
        pairs = [(max(divided_factor, w // divided_factor * divided_factor),
                  max(divided_factor, h // divided_factor * divided_factor)) for w, h in pairs]
        if not is_training or mode != "train":
            pairs = pairs[:1]
        base = pairs[0][0] * pairs[0][1] * first_bs
        self.plans = [(w, h, max(1, int(base / (w * h)))) for w, h in pairs]
        self.dataset, self.shuffle, self.seed, self.epoch = dataset, bool(shuffle), int(seed), 0
        self.batch_size = first_bs
        self.nranks = int(num_replicas) if num_replicas is not None else dist_env.world_size()
        self.local_rank = int(rank) if rank is not None else dist_env.rank()
        self.per_rank = int(math.ceil(len(dataset) / self.nranks))
        chooser = np.random.default_rng([self.seed & 0xFFFFFFFF, 0x5CA1E])
        self.batches: List[Tuple[int, int, int]] = []
        filled = 0
        while filled < self.per_rank:
            w, h, bs = self.plans[int(chooser.integers(len(self.plans)))]
            self.batches.append((w, h, bs))
            filled += bs

    def set_epoch(self, epoch: int) -> None:
        """Fix the shuffle (and the dataset's augmentation key) for ``epoch``."""
        self.epoch = int(epoch)
        self.dataset.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[List[Tuple[int, int, int]]]:
        size = len(self.dataset)
        order = epoch_permutation(size, self.seed, self.epoch) if self.shuffle else np.arange(size)
        mine = order[self.local_rank::self.nranks].tolist()
        start = 0
        for w, h, bs in self.batches:
            ids = mine[start:start + bs]
            if len(ids) < bs:  # the last batch is topped up from the head, as PaddleClas does
                ids += mine[:bs - len(ids)]
            start += bs
            yield [(w, h, i) for i in ids]

    def __len__(self) -> int:
        return len(self.batches)
