"""How the ranks of a sharded teacher pass share work when files are their only channel.

Mining's pool scoring (:mod:`ppssld.mining.score`, :mod:`ppssld.mining.sharded`) and the soft-label cache
(:mod:`ppssld.cache.generate`) run one process per rank under ``paddle.distributed.launch`` and meet only
through a folder. The three rules they share live here, once:

* :func:`share`: rank ``r`` of ``W`` takes tasks ``r, r + W, r + 2W, ...`` of the task list;
* :func:`wait_until`: the one poll loop, a :class:`~ppssld.utils.errors.DataError` naming what was awaited
  when it times out;
* :func:`claim_folder`: the run's description (a manifest or plan JSON file) that a resumed run must
  match: rank 0 writes it, other ranks wait for rank 0's, and one that differs is refused or replaced as the
  caller decides.
"""
import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Sequence, TypeVar, Union

from ppssld.utils.errors import DataError
from ppssld.utils.fingerprint import canonical
from ppssld.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

T = TypeVar("T")
PLAN_TIMEOUT_S = 600.0  # how long other ranks wait for rank 0's plan


def share(tasks: Sequence[T], rank: int, world: int) -> List[T]:
    """This rank's tasks: ``tasks[rank], tasks[rank + world], ...`` (every task on exactly one rank)."""
    return list(tasks[rank::world])


def wait_until(ready: Callable[[], bool], timeout: float, what: Union[str, Callable[[], str]],
               interval: float = 1.0, hint: str = "") -> None:
    """Poll ``ready`` every ``interval`` seconds until it is true.

    Args:
        ready: the condition (checked once more before each sleep).
        timeout: seconds before giving up.
        what: what is awaited, for the message (a callable is asked when the time is up, so it can count
            what is still missing).
        hint: what the user can do, appended to the message after ``; ``.
    Raises:
        DataError: ``timed out after <timeout>s waiting for <what>[; <hint>]``.
    """
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            text = what() if callable(what) else what
            raise DataError(f"timed out after {timeout:.0f}s waiting for {text}" + (f"; {hint}" if hint else ""))
        time.sleep(interval)


def changed_keys(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """The top-level keys whose values differ between two JSON descriptions, sorted (a key only one of them
    has differs, even when its value is null)."""
    return sorted(k for k in set(old) | set(new) if (k in old) != (k in new) or canonical(old[k]) != canonical(new[k]))


def read_json(path: str) -> Dict[str, Any]:
    """A JSON description file as written by :func:`claim_folder`."""
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def claim_folder(folder: str, name: str, plan: Dict[str, Any], rank: int,
                 on_change: Callable[[Dict[str, Any], List[str]], None], peers_check: bool = True,
                 timeout: float = PLAN_TIMEOUT_S, interval: float = 1.0) -> None:
    """Record what this run builds in ``folder/name``, or check that the one there describes the same run.

    With no file there, rank 0 writes ``plan`` and the other ranks wait (up to ``timeout``) for rank 0's.
    With one there that differs from ``plan``, ``on_change(old plan, changed keys)`` decides: it raises
    (a :class:`~ppssld.utils.errors.ConfigError` or :class:`~ppssld.utils.errors.DataError` naming the
    differences) to refuse the folder, or returns to take it over (after removing what the old run left, if
    need be): rank 0 then writes ``plan`` in its place.

    Args:
        folder, name: the folder the run writes and its description file.
        plan: what this run builds (JSON).
        rank: this process's rank.
        on_change: the caller's rule for a differing description (see above).
        peers_check: whether ranks other than 0 judge the description too (False: they only wait for it to
            exist, and rank 0 alone decides).
        timeout, interval: how long and how often other ranks poll for rank 0's file.
    """
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        if rank == 0:
            atomic_write_json(path, plan)
            return
        wait_until(lambda: os.path.isfile(path), timeout, f"rank 0 to write {path}", interval)
    if rank != 0 and not peers_check:
        return
    old = read_json(path)
    changed = changed_keys(old, plan)
    if not changed:
        return
    on_change(old, changed)
    if rank == 0:
        atomic_write_json(path, plan)
