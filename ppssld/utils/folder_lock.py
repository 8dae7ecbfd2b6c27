"""One writer per output folder: a lock file that names its holder, and the rule for a lock left behind.

Training (``<Global.output_dir>/<Arch.name>``), soft-label cache generation (``--out``) and mining
(``--out``) each take the lock of their folder before writing there. The lock is ``<folder>/.ppssld.lock``:

* it is held with ``flock`` for as long as the holding process lives (the kernel lets go when the process
  ends, even by ``kill -9``), and records the holder as JSON (pid, host, start time, command);
* a second writer is refused at once with a :class:`OutputError` naming the holder (pid, host, start time);
* a lock file whose ``flock`` is free but whose record names a process of this host that no longer runs
  was left by a killed run: it is taken over with one warning naming that run; a record of another host
  (a shared file system) is refused, with the file to delete if that run is known to be gone;
* the ranks of one ``paddle.distributed.launch`` job share their folder: global rank 0 takes the lock and
  the other ranks do not contend (:func:`lock_folder` returns None for them);
* one process may take the same folder again (a resumed trainer built in the same process): the lock is
  re-entrant per process and let go when its last holder releases it. Releasing empties the record
  (the file stays: removing it would let a process that opened it before the removal lock a ghost file).
"""
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from typing import Any, Dict, Optional

from ppssld.utils.dist_env import rank
from ppssld.utils.errors import OutputError
from ppssld.utils.io import ensure_dir, file_mode

logger = logging.getLogger(__name__)

LOCK_NAME = ".ppssld.lock"
_HELD: Dict[str, "FolderLock"] = {}  # real folder path -> this process's lock on it


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _describe(holder: Dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')} "
            f"({holder.get('command', '?')})")


class FolderLock:
    """This process's lock on one folder (see the module docstring); use :func:`lock_folder`.

    Args:
        folder: the folder written to (created if missing).
        what: how the user names it in messages, e.g. ``Global.output_dir/Arch.name``.
    """

    def __init__(self, folder: str, what: str) -> None:
        self.folder, self.what = folder, what
        self.path = os.path.join(folder, LOCK_NAME)
        self.count = 0
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock (re-entrant in this process).

        Raises:
            OutputError: another live writer holds it (named), or a lock of another host is in the way.
        """
        if self.count:
            self.count += 1
            return
        ensure_dir(self.folder)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as exc:
            raise OutputError(f"{self.what} {self.folder}: cannot open its lock file {self.path} "
                              f"({exc.strerror or exc}); choose a writable folder") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{self.what} {self.folder}: cannot lock {self.path} ({exc.strerror or exc})") \
                    from exc
            raise OutputError(f"{self.what} {self.folder} is in use by another run: "
                              f"{_describe(holder) if holder else 'a process that is starting'}. Two runs writing "
                              f"one folder would mix their files: wait for it to finish, or choose another "
                              f"folder") from exc
        try:
            self._take_over(fd, _read(fd))
        except OutputError:
            os.close(fd)
            raise
        self.fd, self.count = fd, 1

    def _take_over(self, fd: int, previous: Optional[Dict[str, Any]]) -> None:
        """The ``flock`` is ours: judge the record a run before us left, then write ours."""
        host = socket.gethostname()
        if previous and previous.get("pid") != os.getpid():
            if previous.get("host") != host:
                raise OutputError(f"{self.what} {self.folder} is locked by a run on another host: "
                                  f"{_describe(previous)}; its lock cannot be checked from here. If that run is "
                                  f"no longer running, delete {self.path}; else wait for it or choose another "
                                  f"folder")
            state = "no longer running" if not process_alive(int(previous.get("pid") or 0)) else \
                "running, but no longer holding the lock"
            logger.warning("%s %s: taking over the lock left by %s, %s (killed or crashed?)", self.what,
                           self.folder, _describe(previous), state)
        record = {"pid": os.getpid(), "host": host,
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])[:300]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
            os.fsync(fd)
        except OSError as exc:  # a full disk or a read-only remount: the run could write nothing there either
            raise OutputError(f"{self.what} {self.folder}: cannot write its lock file {self.path} "
                              f"({exc.strerror or exc}); free disk space or choose a writable folder") from exc

    def release(self) -> None:
        """Let go once (the last release empties the record and unlocks)."""
        if not self.count:
            return
        self.count -= 1
        if self.count or self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # a clean end: the next run finds no record to judge
        finally:
            os.close(self.fd)  # closing lets go of the flock
            self.fd = None
            _HELD.pop(os.path.realpath(self.folder), None)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read(fd: int) -> Optional[Dict[str, Any]]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
        record = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def lock_folder(folder: str, what: str) -> Optional[FolderLock]:
    """Take the lock of ``folder`` for this run (global rank 0 only; other ranks share it: None).

    Returns:
        The held lock (release it when the run ends, or use it as a context manager), or None on ranks > 0.
    Raises:
        OutputError: the folder is held by another writer (see :class:`FolderLock`).
    """
    if rank() != 0:
        return None
    key = os.path.realpath(folder)
    lock = _HELD.get(key)
    if lock is None:
        lock = FolderLock(folder, what)
    lock.acquire()
    _HELD[key] = lock
    return lock


class _NoLock:
    """What ranks > 0 hold: nothing (a context manager that does nothing)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None

    def release(self) -> None:
        """Nothing to let go."""


def holding(folder: str, what: str) -> Any:
    """``with holding(folder, what):`` the lock of :func:`lock_folder` for the block (nothing on ranks > 0)."""
    return lock_folder(folder, what) or _NoLock()
