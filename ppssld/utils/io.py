"""Atomic file writes: a crash or kill never leaves a half-written file behind.

Everything written here gets the mode an ordinary ``open``/``mkdir`` would give under the
process's umask (0644 files, 0755 folders under umask 022), not ``tempfile``'s private 0600/0700.
"""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from ppssld.utils.errors import OutputError


def current_umask() -> int:
    """The process umask (from ``/proc`` on Linux, so other threads never see it changed)."""
    try:
        with open("/proc/self/status", "r", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # no /proc (macOS, Windows): fall back to the set-and-restore read below
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the current umask (0644 under umask 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a new folder under the current umask (0755 under umask 022)."""
    return 0o777 & ~current_umask()


def ensure_dir(path: str) -> str:
    """Create folder ``path`` (and parents) if needed.

    Raises:
        OutputError: it cannot be created (a file is in the way, no permission, read-only file system).
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {path}: {exc.strerror or exc}; choose a writable "
                          f"location") from exc
    return path


def _write_failed(path: str, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {exc.strerror or exc}; nothing was replaced (an existing "
                       f"{os.path.basename(path)} is unchanged). Free disk space or choose a writable folder")


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file gets the umask's mode before the rename, so ``path`` reads like any
    other file the user writes.

    Args:
        path: final destination.
    Yields:
        A temporary file name in the same directory (same filesystem, so the rename is atomic).
    Raises:
        OutputError: the folder or file cannot be written (no permission, disk full, ...); ``path`` is untouched.
    """
    directory = ensure_dir(os.path.dirname(os.path.abspath(path)))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _write_failed(path, exc) from exc
    os.close(fd)
    try:
        try:
            yield tmp
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except OutputError:
            raise
        except OSError as exc:
            raise _write_failed(path, exc) from exc
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_temporaries(path: str) -> int:
    """Delete the temporaries that killed :func:`atomic_path` writes of ``path`` left beside it
    (``.<name>.*.tmp``; a kill -9 runs no clean-up). The one place that knows their names.

    Only for a file that one process alone writes at a time (a folder held through
    :mod:`ppssld.utils.folder_lock`, one writer per file in it): a running writer's temporary goes too.
    Returns:
        How many were removed.
    """
    directory, name = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    removed = 0
    for other in names:
        if other.startswith(f".{name}.") and other.endswith(".tmp"):
            try:
                os.remove(os.path.join(directory, other))
                removed += 1
            except FileNotFoundError:
                continue
    return removed


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_save(path: str, writer: Callable[[str], None]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result onto ``path``.

    Args:
        path: final destination.
        writer: writes the file, e.g. ``lambda p: paddle.save(state, p)``.
    """
    with atomic_path(path) as tmp:
        writer(tmp)


def make_temp_dir(final_dir: str, tag: str = "") -> str:
    """A new empty folder beside ``final_dir`` (same filesystem), with the umask's folder mode:
    ``.<name>.<random>``, or ``.<name>.<tag>.<random>`` (the random part holds no dot).

    Fill it, then :func:`publish_dir` it onto ``final_dir``.
    """
    parent = ensure_dir(os.path.dirname(os.path.abspath(final_dir)))
    prefix = "." + os.path.basename(os.path.abspath(final_dir)) + "." + (tag + "." if tag else "")
    try:
        tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write {final_dir}: {exc.strerror or exc}; choose a writable folder") from exc
    os.chmod(tmp, dir_mode())
    return tmp


def publish_dir(tmp_dir: str, final_dir: str) -> None:
    """Move a finished folder onto ``final_dir``, replacing an older one only once the new one is complete.

    The old folder is renamed away, the new one renamed in, then the old one removed: at every
    moment ``final_dir`` is either the complete old folder or the complete new one (a crash between
    the two renames leaves the old one beside it as ``<final_dir>.old-*``).
    """
    old: Optional[str] = None
    if os.path.exists(final_dir):
        old = final_dir.rstrip(os.sep) + ".old-" + os.path.basename(tmp_dir).lstrip(".")
        os.replace(final_dir, old)
    try:
        os.replace(tmp_dir, final_dir)
    except OSError:
        if old:
            os.replace(old, final_dir)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def cache_root() -> str:
    """ppssld's per-user cache folder (saved teacher engines, teacher evaluations): ``$PPSSLD_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ppssld`` (an absolute path), else ``~/.cache/ppssld``. The one place this rule lives."""
    if os.environ.get("PPSSLD_CACHE_DIR"):
        return os.environ["PPSSLD_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ppssld")
