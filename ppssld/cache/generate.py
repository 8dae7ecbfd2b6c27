"""Generate a soft-label cache: the frozen teacher's top-K on every training image, for V views.

View ``v`` of image ``i`` is exactly the image online training draws for ``i`` in epoch ``v + 1``:
the training transform list run with the dataset's augmentation RNG keyed by
``(Global.seed, v + 1, i)`` (:meth:`ppssld.data.datasets.imagenet.ImageNetDataset._rng`; epochs count from 1),
so nothing but the view number is stored. The teacher runs as training runs a frozen teacher
(eval mode: BatchNorm running statistics, no dropout, no gradient), in batches, on the labeled and
unlabeled lists of ``DataLoader.Train`` in the dataset's record order.

Work is cut into (view, chunk) tasks; under ``paddle.distributed.launch`` rank ``r`` of ``W`` takes
tasks ``r, r + W, ...`` (:mod:`ppssld.teacher.shards`; the chunk loop is
:func:`ppssld.teacher.chunk_pass.run_chunks`), and rank 0 writes the manifest once every chunk exists. A
chunk's content depends only on its images and view (fixed batch boundaries), so a killed run re-run with
the same arguments skips its finished chunks and ends with the same bytes as an uninterrupted one.
"""
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ppssld.arch.build import arch_class_num
from ppssld.cache import store
from ppssld.cache.integrity import damaged_chunk, record_chunks
from ppssld.cache.manifest import FORMAT, MANIFEST, VERSION, class_count, expected_fields, teacher_entry
from ppssld.cache.rules import check_cacheable
from ppssld.utils.checks import is_int
from ppssld.utils.config import get, global_seed
from ppssld.data.datasets.imagenet import build_dataset
from ppssld.teacher.chunk_pass import fixed_batches, run_chunks
from ppssld.teacher.frozen import Teacher, teacher_from_config
from ppssld.teacher.shards import claim_folder, share, wait_until
from ppssld.utils.dist_env import dist_env
from ppssld.utils.errors import ConfigError
from ppssld.utils.fingerprint import differences
from ppssld.utils.folder_lock import holding
from ppssld.utils.io import atomic_write_json
from ppssld.utils.topk import top_k

logger = logging.getLogger(__name__)

PLAN = "plan.json"  # what a started run is building; a resumed run must build the same


def build_train_dataset(config: Dict[str, Any]) -> Any:
    """The training dataset exactly as training builds it (label bound, seed)."""
    dataset_cfg = dict(get(config, "DataLoader.Train.dataset") or {})
    if not dataset_cfg:
        raise ConfigError("DataLoader.Train.dataset is missing: the cache covers the training images")
    if dataset_cfg.get("class_num") is None and arch_class_num(config["Arch"]) is not None:
        dataset_cfg["class_num"] = arch_class_num(config["Arch"])
    dataset = build_dataset(dataset_cfg, "DataLoader.Train.dataset")
    dataset.set_seed(global_seed(config))
    return dataset


def stored_values(values: str, topk: int, classes: int, prob_dtype: str) -> str:
    """What the chunks hold: ``logits`` (``auto`` when K = class count in float32) or ``probs``.

    The exact case stores the teacher's float32 logits, the very tensor online training hands its losses,
    so a student trained from such a cache follows the online arithmetic bit for bit wherever the teacher's
    logits do not depend on the batch they were computed in (``log`` of stored probabilities does not:
    ``softmax(log p)`` differs from ``p`` in the last bits, and training amplifies such differences).
    """
    if values not in store.VALUE_KINDS + ("auto",):
        raise ConfigError(f"--values must be one of {store.VALUE_KINDS + ('auto',)}, got {values!r}")
    exact = topk == classes and prob_dtype == "float32"
    if values == "auto":
        return "logits" if exact else "probs"
    if values == "logits" and not exact:
        raise ConfigError(f"--values logits needs --topk {classes} (the class count) and --dtype float32, got "
                          f"--topk {topk} --dtype {prob_dtype}: a partial or float16 cache stores probabilities")
    return values


def _plan(config: Dict[str, Any], records: List[str], views: int, topk: int, chunk_size: int,
          batch_size: int, prob_dtype: str, values: str, teacher: Optional[Teacher]) -> Dict[str, Any]:
    fields = expected_fields(config, records)
    classes = fields["class_num"]
    if not 1 <= topk <= classes:
        raise ConfigError(f"--topk must be in [1, {classes}] (the teacher's class count), got {topk}")
    plan = {"format": FORMAT, "version": VERSION, **fields, "views": views, "topk": topk,
            "chunk_size": chunk_size, "batch_size": batch_size, "prob_dtype": prob_dtype,
            "values": stored_values(values, topk, classes, prob_dtype),
            "index_dtype": store.index_dtype(classes).name, "num_images": len(records),
            "chunks_per_view": store.chunk_count(len(records), chunk_size),
            "view_rule": "view v of image i = the training transform with RNG key (seed, v + 1, i): "
                         "what online training draws in epoch v + 1"}
    if teacher is not None:
        plan["teacher_description"] = teacher.description
    return plan


def generate(config: Dict[str, Any], out: str, views: int, topk: int, chunk_size: int = 1024,
             batch_size: Optional[int] = None, prob_dtype: str = "float16", workers: int = 2,
             wait_timeout: float = 24 * 3600, values: str = "auto") -> Dict[str, Any]:
    """Write (or finish) the cache of ``config`` in ``out``.

    Args:
        config: a loaded distillation config (not mutated).
        out: the cache folder.
        views / topk: V and K.
        chunk_size: images per chunk file.
        batch_size: teacher batch (default: ``DataLoader.Train.sampler.batch_size``, else 64).
        prob_dtype: ``float16`` (default) or ``float32`` (exact probabilities).
        workers: image-reading threads.
        wait_timeout: how long rank 0 waits for the other ranks' chunks.
        values: ``auto`` (logits when K = class count in float32, else probabilities), ``probs`` or
            ``logits`` (see :func:`stored_values`).
    Returns:
        Statistics (images and chunks done now / before, seconds, img/s) and the manifest path.
    Raises:
        ConfigError: bad arguments, a config the cache cannot serve, or ``out`` holding another cache.
        OutputError: another generation writes ``out`` (its holder named; see :mod:`ppssld.utils.folder_lock`).
    """
    for name, value, low in (("--views", views, 1), ("--topk", topk, 1), ("--chunk-size", chunk_size, 1),
                             ("--workers", workers, 1)):
        if not is_int(value) or value < low:
            raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        raise ConfigError(f"--batch-size must be an int >= 1 (leave it out for the sampler's), got {batch_size!r}")
    if prob_dtype not in store.PROB_DTYPES:
        raise ConfigError(f"probability dtype must be one of {store.PROB_DTYPES}, got {prob_dtype!r}")
    check_cacheable(config)
    batch_size = int(batch_size or get(config, "DataLoader.Train.sampler.batch_size", 64) or 64)
    with holding(out, "the soft-label cache folder (--out)"):  # one generation per folder (rank 0 holds it)
        return _generate(config, out, views, topk, chunk_size, batch_size, prob_dtype, workers, wait_timeout, values)


def _generate(config: Dict[str, Any], out: str, views: int, topk: int, chunk_size: int, batch_size: int,
              prob_dtype: str, workers: int, wait_timeout: float, values: str) -> Dict[str, Any]:
    rank, world = dist_env()
    dataset = build_train_dataset(config)
    records = [r.path for r in dataset.records]
    _name, entry, _weights = teacher_entry(config)
    plan = _plan(config, records, views, topk, chunk_size, batch_size, prob_dtype, values, None)
    as_logits = plan["values"] == "logits"
    claim_folder(out, PLAN, plan, rank, lambda old, changed: _refuse_or_adopt(out, old, changed, plan, rank),
                 interval=0.2)
    teacher = teacher_from_config(config, name=_name, views="train")  # its own input undoes the training views
    classes = class_count(entry, config)
    tasks = [(v, c) for v in range(views) for c in range(plan["chunks_per_view"])]
    index_type = store.index_dtype(classes)
    bounds = lambda chunk: (chunk * chunk_size, min((chunk + 1) * chunk_size, len(records)))  # noqa: E731
    with ThreadPoolExecutor(max_workers=workers) as readers:
        def load(task: Tuple[int, int]) -> Iterator[np.ndarray]:
            """The chunk's images, read ahead by ``workers`` threads while the teacher runs (within the chunk:
            the dataset's epoch is shared state, so the next chunk is not read before this one is done)."""
            dataset.set_epoch(task[0] + 1)
            return readers.map(lambda i: dataset[i][0], range(*bounds(task[1])))

        def process(task: Tuple[int, int], images: Iterator[np.ndarray]) -> int:
            (view, chunk), (lo, hi) = task, bounds(task[1])
            parts = []
            for batch in fixed_batches(images, batch_size):
                probs, _ = teacher(batch, logits=as_logits)
                if probs.shape[1] != classes:
                    raise ConfigError(f"the teacher outputs {probs.shape[1]} classes but its class_num is {classes}")
                parts.append(top_k(probs, topk, index_type, prob_dtype))
            store.write_chunk(out, view, chunk, np.concatenate([p for p, _ in parts]),
                              np.concatenate([c for _, c in parts]))
            logger.info("rank %d: view %d chunk %d (images %d-%d) written", rank, view, chunk, lo, hi - 1)
            return hi - lo

        run = run_chunks(share(tasks, rank, world), lambda task: _kept(out, task, plan), load, process,
                         prefetch=False, done_word="written")
    stats: Dict[str, Any] = {"rank": rank, "world": world, "chunks": run.mine, "done_before": run.done_before,
                             "chunks_now": run.done_now, "images_now": run.images_now,
                             "seconds": round(run.seconds, 3)}
    stats["images_per_s"] = round(stats["images_now"] / stats["seconds"], 2) if stats["seconds"] > 0 else None
    if rank == 0:
        _wait_all(out, tasks, wait_timeout)
        plan["teacher_description"] = teacher.description
        plan["ranks"] = world
        plan["chunks"] = record_chunks(out, plan)  # every header checked, every file's size and hash recorded
        atomic_write_json(os.path.join(out, MANIFEST), plan)
        logger.info("soft-label cache %s: %d images x %d views, top-%d of %d classes (%s / %s)", out, len(records),
                    views, topk, classes, prob_dtype, index_type.name)
    stats["manifest"] = os.path.join(out, MANIFEST)
    return stats


def _kept(out: str, task: tuple, plan: Dict[str, Any]) -> bool:
    """Whether a chunk an earlier run wrote is kept: both files there, with the headers and sizes the plan
    implies; a damaged one is written again (one warning naming the file and what differed)."""
    if not store.chunk_done(out, *task):
        return False
    bad = damaged_chunk(out, task[0], task[1], plan)
    if bad is not None:
        logger.warning("%s is damaged (%s): writing view %d chunk %d again", bad[0], bad[1], *task)
        return False
    return True


def _refuse_or_adopt(out: str, old: Dict[str, Any], changed: List[str], plan: Dict[str, Any], rank: int) -> None:
    """The rule for a ``plan.json`` of another run in ``out``: the same cache begun by a version 2 ppssld
    (same chunks, no checksums yet) is finished as this version; anything else is refused.

    Raises:
        ConfigError: ``out`` holds (part of) another cache (the differences named).
    """
    if changed == ["version"] and old.get("version") == 2:
        if rank == 0:  # its chunks are kept and recorded; claim_folder writes this plan over the old one
            logger.info("%s: begun by an older ppssld (version %s); its chunks are kept and recorded",
                        os.path.join(out, PLAN), old.get("version"))
        return
    raise ConfigError(f"--out {out} holds (part of) another cache: {'; '.join(differences(old, plan))}. "
                      f"Choose another folder or delete this one")


def _wait_all(out: str, tasks: List[Tuple[int, int]], timeout: float) -> None:
    """Rank 0: wait for every chunk of every rank."""
    missing = list(tasks)

    def ready() -> bool:
        missing[:] = [t for t in tasks if not store.chunk_done(out, *t)]
        return not missing

    wait_until(ready, timeout, lambda: f"{len(missing)} chunks of other ranks (first: view {missing[0][0]} chunk "
                                       f"{missing[0][1]})", 0.2, "re-run to finish the cache")
