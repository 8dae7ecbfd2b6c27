"""Atomic file writes: a crash or kill never leaves a half-written file behind."""
import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Args:
        path: final destination.
    Yields:
        A temporary file name in the same directory (same filesystem, so the rename is atomic).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
