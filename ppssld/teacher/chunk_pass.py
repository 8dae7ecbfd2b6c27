"""One resumable pass of a frozen teacher over chunks of images: the loop mining and the cache share.

A pass is cut into tasks (chunks); each rank takes its share (:func:`ppssld.teacher.shards.share`), skips
the chunks an earlier run finished, and for each other chunk reads its images (in a background thread one
chunk ahead, when ``prefetch``), runs the teacher in fixed batches (:func:`fixed_batches`: a chunk's
result never depends on what ran before it) and saves it atomically. Pool scoring
(:func:`ppssld.mining.score.score_pool`) and cache generation (:func:`ppssld.cache.generate.generate`)
pass their reading, scoring and saving as callbacks to :func:`run_chunks`; both keep the teacher's best
classes with the one stable top-k, :func:`ppssld.utils.topk.top_k`.
"""
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np

from ppssld.utils.progress import progress

logger = logging.getLogger(__name__)

T = TypeVar("T")


def fixed_batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """``images`` stacked into batches of ``batch_size`` in order (the last one shorter); it is consumed
    lazily, so images read in threads are batched as they come."""
    batch = []
    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


@dataclass
class PassStats:
    """Counters of one rank's pass."""
    mine: int = 0                  # chunks of this rank
    done_before: int = 0           # of them, finished by an earlier run (kept)
    done_now: int = 0              # written now
    images_now: int = 0            # images in the chunks written now
    seconds: float = 0.0           # the loop, reading and teacher together
    seconds_waiting: float = 0.0   # waiting for a chunk's images (the teacher idle)


def run_chunks(mine: Sequence[T], done: Callable[[T], bool], load: Callable[[T], Any],
               process: Callable[[T, Any], int], prefetch: bool = True, limit: Optional[int] = None,
               desc: Optional[str] = None, done_word: str = "done") -> PassStats:
    """Run this rank's unfinished chunks.

    Args:
        mine: this rank's chunks (:func:`ppssld.teacher.shards.share`), in order.
        done: whether an earlier run finished a chunk (it is then skipped; a damaged one says False).
        load: a chunk's images (whatever ``process`` takes); with ``prefetch`` it runs in a background
            thread while the teacher works on the chunk before.
        process: teacher, result and atomic save of one chunk, given what ``load`` returned; returns the
            number of images it held.
        prefetch: read the next chunk ahead (False: ``load`` is called just before ``process``, e.g. when it
            returns images still being read by its own threads).
        limit: stop after this many new chunks (tests of resumption).
        desc: the progress bar's text (None: no bar).
        done_word: what a finished chunk is, in the resumption log line (``scored``, ``written``).
    """
    todo = [t for t in mine if not done(t)]
    stats = PassStats(mine=len(mine), done_before=len(mine) - len(todo))
    if limit is not None:
        todo = todo[:limit]
    if stats.done_before:
        logger.info("resuming: %d of this rank's %d chunks are already %s", stats.done_before, len(mine), done_word)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, todo[0]) if todo and prefetch else None
        for k, task in enumerate(progress(todo, desc=desc or "", unit="chunk", disable=desc is None)):
            waited = time.perf_counter()
            loaded = pending.result() if pending is not None else load(task)
            stats.seconds_waiting += time.perf_counter() - waited
            pending = pool.submit(load, todo[k + 1]) if prefetch and k + 1 < len(todo) else None
            stats.images_now += process(task, loaded)
            stats.done_now += 1
    stats.seconds = time.perf_counter() - start
    return stats
