"""DistributedBatchSampler: reproducible per-epoch shuffle, one shard per rank.

The permutation of an epoch is a pure function of (seed, epoch), identical on every rank;
rank ``r`` of ``w`` takes positions ``r, r + w, r + 2w, ...``.

* ``mode="train"``: the permutation is padded (by repeating its head) to a multiple of the
  world size, so every rank runs the same number of steps (PaddleClas behaviour).
* ``mode="eval"``: no padding and no ``drop_last``: every sample is seen exactly once over all
  ranks, so summed metrics equal a single-process evaluation. Ranks may differ by one sample.
"""
import logging
import math
from typing import Any, Iterator, List, Optional

import numpy as np
import paddle

from ppssld.utils import dist_env
from ppssld.utils.checks import is_int
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import SAMPLERS

logger = logging.getLogger(__name__)

MODES = ("train", "eval")


def epoch_permutation(size: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``range(size)`` for (seed, epoch); the same on every machine and rank."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, 0x55D]).permutation(size)


@SAMPLERS.register(name="DistributedBatchSampler", aliases=("BatchSampler",))
class DistributedBatchSampler(paddle.io.BatchSampler):
    """Batches of indices for this rank.

    Args:
        dataset: the dataset (its ``set_epoch`` is called too, to key augmentation to the epoch).
        batch_size: samples per batch on each rank.
        shuffle: shuffle every epoch.
        drop_last: drop this rank's last incomplete batch (train mode only).
        num_replicas: world size (default: from paddle.distributed).
        rank: this rank (default: from paddle.distributed).
        seed: shuffle seed.
        mode: ``"train"`` or ``"eval"``.
    """

    def __init__(self, dataset: Any, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, seed: int = 0,
                 mode: str = "train") -> None:
        if not is_int(batch_size) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.mode = mode
        if mode == "eval" and drop_last:
            logger.warning("drop_last is ignored for evaluation: every sample is evaluated exactly once")
            drop_last = False
        self.drop_last = bool(drop_last)
        self.nranks = int(num_replicas) if num_replicas is not None else dist_env.world_size()
        self.local_rank = int(rank) if rank is not None else dist_env.rank()
        if not 0 <= self.local_rank < self.nranks:
            raise ConfigError(f"rank {self.local_rank} is outside world size {self.nranks}")
        self.seed = int(seed)
        self.epoch = 0
        if len(dataset) == 0:
            raise ConfigError("the dataset is empty: nothing to sample")

    def set_epoch(self, epoch: int) -> None:
        """Fix the shuffle (and the dataset's augmentation key) for ``epoch``."""
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def rank_indices(self) -> List[int]:
        """This rank's sample indices for the current epoch, in order."""
        size = len(self.dataset)
        order = epoch_permutation(size, self.seed, self.epoch) if self.shuffle else np.arange(size)
        if self.mode == "train":
            total = int(math.ceil(size / self.nranks)) * self.nranks
            if total > size:
                order = np.concatenate([order, np.resize(order, total - size)])
        return order[self.local_rank::self.nranks].tolist()

    def __iter__(self) -> Iterator[List[int]]:
        indices = self.rank_indices()
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start:start + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch

    def __len__(self) -> int:
        size = len(self.dataset)
        if self.mode == "train":
            per_rank = int(math.ceil(size / self.nranks))
        else:
            per_rank = len(range(self.local_rank, size, self.nranks))
        return per_rank // self.batch_size if self.drop_last else int(math.ceil(per_rank / self.batch_size))


@SAMPLERS.register(name="RASampler")
class RASampler(DistributedBatchSampler):
    """Repeated augmentation (Hoffer et al. 2020; DeiT's sampler): each image ``num_repeats`` times in a row.

    The (seed, epoch) permutation is repeated element-wise, padded to a multiple of the world size and
    dealt to the ranks, so the copies of an image land on different ranks (different augmentations);
    each rank then keeps its first ``len(dataset) // 256 * 256 / world`` indices, an epoch as long as
    the dataset (DeiT's rule; a dataset under 256 images keeps ``ceil(len / world)``).

    Args:
        num_repeats: copies of each image per epoch (PaddleClas default 3).
        (others as :class:`DistributedBatchSampler`)
    """

    def __init__(self, dataset: Any, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, seed: int = 0,
                 mode: str = "train", num_repeats: int = 3) -> None:
        super().__init__(dataset, batch_size, shuffle, drop_last, num_replicas, rank, seed, mode)
        if mode != "train":
            raise ConfigError("RASampler repeats training images; use DistributedBatchSampler for evaluation")
        if not is_int(num_repeats) or num_repeats < 1:
            raise ConfigError(f"num_repeats must be a positive int, got {num_repeats!r}")
        self.num_repeats = num_repeats
        size = len(dataset)
        self.num_selected = size // 256 * 256 // self.nranks or int(math.ceil(size / self.nranks))

    def rank_indices(self) -> List[int]:
        size = len(self.dataset)
        order = epoch_permutation(size, self.seed, self.epoch) if self.shuffle else np.arange(size)
        repeated = np.repeat(order, self.num_repeats)
        total = int(math.ceil(len(repeated) / self.nranks)) * self.nranks
        repeated = np.concatenate([repeated, repeated[:total - len(repeated)]])
        return repeated[self.local_rank::self.nranks][:self.num_selected].tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_selected // self.batch_size
        return int(math.ceil(self.num_selected / self.batch_size))
