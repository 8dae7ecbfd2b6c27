"""Checks of the chunk files caches are made of: ``.npy`` headers, recorded sizes and content hashes.

A chunk file is judged three ways, from cheap to thorough:

* :func:`npy_difference`: the ``.npy`` header read (a few hundred bytes) and compared with the shape and
  dtype the cache expects, and the file's size with what that header implies (a truncated copy, an
  object array written in its place, a file that is not ``.npy`` at all);
* :func:`record_difference` with ``full=False``: its size against the size recorded when it was written
  (one ``stat``);
* :func:`record_difference` with ``full=True``: its content hash against the recorded one (reads it all),
  with :func:`ppssld.utils.fingerprint.file_fingerprint`, the project's one hash (BLAKE2b).

Each returns ``None`` or a short text saying what differs; :func:`problems_message` lists them.
"""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ppssld.utils.errors import DataError
from ppssld.utils.fingerprint import file_fingerprint

SHOWN = 5  # problems listed in one message; the rest are counted


def npy_layout(path: str) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` from a ``.npy`` file's header, without reading its data.

    Raises:
        DataError: not a readable ``.npy`` file (naming it and why).
    """
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f".npy format version {version}; the cache writes 1.0 or 2.0")
            offset = handle.tell()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise DataError(f"{path}: not a .npy array file ({exc})") from exc
    if fortran:
        raise DataError(f"{path}: a Fortran-ordered array; the cache writes C order")
    return tuple(int(n) for n in shape), dtype, offset


def npy_difference(path: str, shape: Sequence[int], dtype: Any) -> Optional[str]:
    """What differs between ``.npy`` file ``path`` and an array of ``shape`` and ``dtype`` (None: nothing)."""
    if not os.path.isfile(path):
        return "missing"
    try:
        found_shape, found_dtype, offset = npy_layout(path)
    except DataError as exc:
        return str(exc).split(": ", 1)[-1]
    want_dtype = np.dtype(dtype)
    if found_dtype.hasobject:
        return f"holds Python objects (dtype {found_dtype}), not {want_dtype} numbers"
    if found_dtype != want_dtype:
        return f"dtype {found_dtype}, expected {want_dtype}"
    if found_shape != tuple(shape):
        return f"shape {list(found_shape)}, expected {list(shape)}"
    size, expected = os.path.getsize(path), offset + int(np.prod(shape)) * want_dtype.itemsize
    if size != expected:
        return f"{size} bytes, its header implies {expected} (truncated or padded)"
    return None


def record_difference(path: str, recorded: Dict[str, Any], full: bool = False) -> Optional[str]:
    """What differs between file ``path`` and its record ``{"size", "blake2b"}`` (None: nothing).

    ``full``: compare the content hash too (reads the whole file); else the size alone (one ``stat``).
    """
    if not os.path.isfile(path):
        return "missing"
    size = os.path.getsize(path)
    if size != recorded.get("size"):
        return f"{size} bytes, recorded {recorded.get('size')}"
    if full:
        found = file_fingerprint(path).get("blake2b")
        if found != recorded.get("blake2b"):
            return f"content hash {found}, recorded {recorded.get('blake2b')} (same size, other bytes)"
    return None


def problems_message(what: str, problems: List[Tuple[str, str]], fix: str) -> str:
    """One message: ``what``, then ``file: what differs`` for the first :data:`SHOWN` problems, then ``fix``."""
    lines = [f"  {path}: {why}" for path, why in problems[:SHOWN]]
    if len(problems) > SHOWN:
        lines.append(f"  ... and {len(problems) - SHOWN} more")
    return f"{what}: {len(problems)} chunk file(s) do not match:\n" + "\n".join(lines) + f"\n{fix}"
