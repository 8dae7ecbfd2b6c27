"""Fingerprints of what a result was built from: settings, configs, input files, lists and arrays, and their diff.

The one content hash of ppssld: BLAKE2b (16-byte digests), here and nowhere else.
"""
import hashlib
import json
import os
from typing import Any, Dict, List

CHUNK = 1 << 20


def file_fingerprint(path: str) -> Dict[str, Any]:
    """``{"size", "blake2b"}`` of a file's contents, or ``{"missing": True}``.

    Contents, not modification times: a list rewritten with the same lines, or a checkpoint copied
    elsewhere, still matches. Image folders are covered by the label lists that name their images.
    """
    if not os.path.isfile(path):
        return {"missing": True}
    hasher = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(block)
    return {"size": os.path.getsize(path), "blake2b": hasher.hexdigest()}


def canonical(obj: Any) -> str:
    """A stable JSON text of ``obj`` (sorted keys; anything not JSON becomes its ``str``)."""
    return json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)


def digest(obj: Any) -> str:
    """A short BLAKE2 digest of :func:`canonical` ``(obj)``."""
    return hashlib.blake2b(canonical(obj).encode("utf-8"), digest_size=16).hexdigest()


def _flatten(obj: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(obj, dict) and obj:
        flat: Dict[str, Any] = {}
        for key, value in obj.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: obj}


def differences(old: Dict[str, Any], new: Dict[str, Any], limit: int = 5) -> List[str]:
    """What changed between two fingerprints, as ``key: old -> new`` lines (at most ``limit``)."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if canonical(a.get(key)) != canonical(b.get(key)):
            lines.append(f"{key}: {_short(a.get(key, '(absent)'))} -> {_short(b.get(key, '(absent)'))}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def _short(value: Any, width: int = 60) -> str:
    text = canonical(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def arrays_digest(arrays: Dict[str, Any]) -> str:
    """A BLAKE2 digest of named arrays' names, shapes, dtypes and bytes (weights in memory, e.g. a teacher's
    ``state_dict`` as numpy), in sorted name order."""
    import numpy as np

    hasher = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        hasher.update(f"{name}|{value.shape}|{value.dtype}|".encode("utf-8"))
        hasher.update(value.tobytes())
    return hasher.hexdigest()


def lines_digest(lines: Any) -> str:
    """A BLAKE2 digest of text lines in order (e.g. a pool's image paths), each ended by a newline."""
    hasher = hashlib.blake2b(digest_size=16)
    for line in lines:
        hasher.update(str(line).encode("utf-8") + b"\n")
    return hasher.hexdigest()


def state_digest(state: Dict[str, Any]) -> str:
    """A BLAKE2 digest of a state dict's names and values in sorted name order (Paddle tensors or arrays);
    what checkpoints record to detect mixed files (kept byte-compatible with the checkpoints already written)."""
    import numpy as np

    hasher = hashlib.blake2b(digest_size=16)
    for key in sorted(state):
        value = state[key]
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        hasher.update(key.encode("utf-8"))
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()
