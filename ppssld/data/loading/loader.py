"""build_dataloader: PaddleClas ``DataLoader.Train`` / ``DataLoader.Eval`` mapping -> paddle DataLoader."""
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import paddle
from paddle.io.dataloader.collate import default_collate_fn

from ppssld.utils.checks import is_int
from ppssld.utils.config import check_keys
from ppssld.data.datasets.imagenet import SampleError, build_dataset
from ppssld.data.loading.sampler import DistributedBatchSampler
from ppssld.utils.errors import ConfigError, DataError, did_you_mean
from ppssld.utils.registry import SAMPLERS

logger = logging.getLogger(__name__)

LOADER_KEYS = ("dataset", "sampler", "loader")
LOADER_OPTIONS = ("num_workers", "use_shared_memory")
ERROR_FIELD = "ppssld_data_error"


def collate(samples: List[Any]) -> Any:
    """Paddle's default collation, except that a worker's :class:`SampleError` becomes an error batch
    ``{ERROR_FIELD: utf-8 bytes as uint8}`` that :class:`DataLoader` raises in the main process."""
    for sample in samples:
        if isinstance(sample, SampleError):
            return {ERROR_FIELD: np.frombuffer(sample.message.encode("utf-8"), dtype=np.uint8).copy()}
    return default_collate_fn(samples)


class DataLoader(paddle.io.DataLoader):
    """paddle.io.DataLoader that reports skipped bad images when a pass ends and raises a worker's
    DataError in the main process with its own message (see :func:`collate`).

    With ``num_workers: 0`` batches are read in this process, one batch ahead in one helper thread
    (decoding overlaps the training step, as in Paddle's single-process loader); Paddle's helper
    thread dies silently on a dataset error, leaving the consumer waiting forever, while here the
    dataset's own exception reaches the caller with the batch it belongs to. Augmentation draws
    from a per-sample generator, so the batches are the same as reading them in the caller's thread.
    """

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            yield from self._iter_in_this_thread()
        else:
            for batch in super().__iter__():
                if isinstance(batch, dict) and ERROR_FIELD in batch:
                    raise DataError(bytes(np.asarray(batch[ERROR_FIELD]).tobytes()).decode("utf-8"))
                yield batch
        if hasattr(self.dataset, "bad_image_report"):
            self.dataset.bad_image_report()

    def _iter_in_this_thread(self) -> Iterator[List[paddle.Tensor]]:
        """Read and collate each batch one ahead in a helper thread, convert it here (same batches as Paddle's)."""
        collate_fn = self.collate_fn or collate

        def read(indices: List[int]) -> Any:
            return collate_fn([self.dataset[i] for i in indices])

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ppssld-reader") as pool:
            pending = None
            for indices in self.batch_sampler:
                ahead = pool.submit(read, list(indices))
                if pending is not None:
                    yield [paddle.to_tensor(field) for field in pending.result()]
                pending = ahead
            if pending is not None:
                yield [paddle.to_tensor(field) for field in pending.result()]


def _mode(mode: str) -> str:
    key = str(mode).lower()
    if key not in ("train", "eval"):
        raise ConfigError(f"mode must be 'train' or 'eval', got {mode!r}")
    return key


def build_dataloader(loader_cfg: Dict[str, Any], mode: str, seed: int = 0, where: str = "DataLoader.Train",
                     class_num: Optional[int] = None) -> Tuple[paddle.io.DataLoader, DistributedBatchSampler]:
    """Build the dataset, the distributed batch sampler and the loader.

    Args:
        loader_cfg: ``{dataset: {...}, sampler: {name, batch_size, drop_last, shuffle}, loader: {num_workers,
            use_shared_memory}}``.
        mode: ``"train"`` (padded shards, same step count on every rank) or ``"eval"`` (every sample once).
        seed: shuffle and augmentation seed (the same on every rank).
        where: config location for error messages.
        class_num: the model's class count; used as the dataset's label bound unless the dataset sets one.
    Returns:
        ``(loader, sampler)``; batches are ``(images float32 [N,3,H,W], labels int64 [N])``, unlabeled = -1;
        call ``sampler.set_epoch(epoch)`` before each epoch. ``loader.dataset`` is the dataset.
    Raises:
        ConfigError: unknown keys or values, with the closest valid names.
    """
    mode = _mode(mode)
    check_keys(loader_cfg, LOADER_KEYS, where)
    if "dataset" not in loader_cfg:
        raise ConfigError(f"{where} has no dataset")
    dataset_cfg = dict(loader_cfg["dataset"]) if isinstance(loader_cfg["dataset"], dict) else loader_cfg["dataset"]
    if class_num is not None and isinstance(dataset_cfg, dict) and dataset_cfg.get("class_num") is None:
        dataset_cfg["class_num"] = class_num
    dataset = build_dataset(dataset_cfg, f"{where}.dataset")
    dataset.set_seed(seed)

    sampler_cfg = dict(loader_cfg.get("sampler") or {})
    name = sampler_cfg.pop("name", "DistributedBatchSampler")
    for key in ("dataset", "seed", "mode", "num_replicas", "rank"):
        if key in sampler_cfg:
            raise ConfigError(f"{where}.sampler.{key} is set by ppssld, not by the config; remove it")
    if getattr(SAMPLERS.get(name, f"{where}.sampler"), "needs_batch_size", True):
        sampler_cfg.setdefault("batch_size", 1)
    sampler = SAMPLERS.build(name, sampler_cfg, f"{where}.sampler", dataset=dataset, seed=seed, mode=mode)
    sampler.set_epoch(0)

    options = dict(loader_cfg.get("loader") or {})
    for key in options:
        if key not in LOADER_OPTIONS:
            raise ConfigError(f"{where}.loader: unknown key {key!r}.{did_you_mean(key, LOADER_OPTIONS)} "
                              f"Valid keys: {', '.join(LOADER_OPTIONS)}")
    num_workers = options.get("num_workers", 0)
    if not is_int(num_workers) or num_workers < 0:
        raise ConfigError(f"{where}.loader.num_workers must be an int >= 0, got {num_workers!r}")
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                        use_shared_memory=bool(options.get("use_shared_memory", True)), return_list=True,
                        collate_fn=collate)
    logger.info("%s: %d images (%d labeled, %d unlabeled), %d batches of %d per rank (rank %d of %d), "
                "%d workers", where, len(dataset), dataset.num_labeled, dataset.num_unlabeled, len(sampler),
                sampler.batch_size, sampler.local_rank, sampler.nranks, num_workers)
    return loader, sampler
