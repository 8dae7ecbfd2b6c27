"""A soft-label cache's chunk files against its manifest: what is checked when, and ``--verify``.

Since manifest version 3 the manifest records every chunk file's size and BLAKE2b content hash
(``chunks``: ``{"v0000/c000000.prob.npy": {"size", "blake2b"}, ...}``), computed by rank 0 once every
chunk exists. What is checked:

* **generation** (:func:`damaged_chunk`): a chunk left by an earlier run is kept only if both files'
  ``.npy`` headers give the shape and dtype the plan implies and the file sizes agree with them; a damaged
  one is written again (one warning line naming the file and what differed). Before the manifest is
  written, every chunk is checked so, and hashed (:func:`record_chunks`).
* **training start-up** (:func:`check_sizes`): each chunk file's size against the manifest, one ``stat`` per
  file; the ``.npy`` header is checked when a chunk is first memory-mapped
  (:class:`ppssld.cache.store.ChunkReader`), so a file truncated or replaced by an object array is named
  with what differs instead of numpy's ``Array can't be memory-mapped``.
* ``tools/cache_soft_labels.py --verify DIR`` (:func:`verify_cache`): headers, sizes and full content
  hashes of every file (reads the whole cache).

A cache written before checksums (manifest version 1 or 2) keeps working: training logs that its files
are not checked against a record and still checks each header as it opens it; ``--verify`` checks the
headers and says that the contents cannot be verified. Regenerate it to add the record.
"""
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from ppssld.cache import store
from ppssld.utils.chunk_files import npy_difference, problems_message, record_difference
from ppssld.utils.errors import DataError
from ppssld.utils.fingerprint import file_fingerprint

logger = logging.getLogger(__name__)

REGENERATE = ("Delete the files named and re-run tools/cache_soft_labels.py with the same arguments: it writes "
              "them again and rewrites the manifest")


def tasks(manifest: Dict[str, Any]) -> List[Tuple[int, int]]:
    """Every ``(view, chunk)`` of a cache or plan."""
    chunks = store.chunk_count(int(manifest["num_images"]), int(manifest["chunk_size"]))
    return [(v, c) for v in range(int(manifest["views"])) for c in range(chunks)]


def damaged_chunk(root: str, view: int, chunk: int, manifest: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """``(file, what differs)`` for the first of a chunk's two files whose header or size is wrong, else None."""
    for path, (shape, dtype) in zip(store.chunk_paths(root, view, chunk), store.chunk_layout(manifest, chunk)):
        why = npy_difference(path, shape, dtype)
        if why is not None:
            return path, why
    return None


def record_chunks(root: str, manifest: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Check every chunk's headers, then record each file's size and content hash (the manifest's ``chunks``).

    Raises:
        DataError: a chunk is damaged (the files named, with what differs).
    """
    problems = [bad for v, c in tasks(manifest) for bad in [damaged_chunk(root, v, c, manifest)] if bad]
    if problems:
        raise DataError(problems_message(f"soft-label cache {root}", problems, REGENERATE))
    record = {}
    for v, c in tasks(manifest):
        for path in store.chunk_paths(root, v, c):
            record[os.path.relpath(path, root)] = file_fingerprint(path)
    return record


def check_sizes(root: str, manifest: Dict[str, Any]) -> None:
    """Training start-up: every chunk file exists with its recorded size (nothing is read).

    Raises:
        DataError: listing the files that are missing or of another size.
    """
    record = manifest.get("chunks")
    if record is None:
        logger.warning("soft-label cache %s was written before chunk checksums (manifest version %s): its files "
                       "are not checked against a record, only each header as it is opened; regenerate it to add "
                       "the record (tools/cache_soft_labels.py --verify %s checks the headers)", root,
                       manifest.get("version"), root)
        return
    layouts = {os.path.relpath(path, root): layout for v, c in tasks(manifest)
               for path, layout in zip(store.chunk_paths(root, v, c), store.chunk_layout(manifest, c))}
    problems = [(os.path.join(root, rel), "not in the manifest's record") for rel in sorted(set(layouts) - set(record))]
    for rel in sorted(record):
        path = os.path.join(root, rel)
        why = record_difference(path, record[rel], full=False)
        if why is not None and why != "missing" and rel in layouts:  # say what the header shows, too
            header = npy_difference(path, *layouts[rel])
            why = why if header is None else f"{why}; {header}"
        if why is not None:
            problems.append((path, why))
    if problems:
        raise DataError(problems_message(f"Global.soft_label_cache={root}", problems, REGENERATE))


def verify_cache(root: str) -> Dict[str, Any]:
    """Check a whole cache: every chunk's header, size and (when recorded) content hash.

    Returns:
        ``{"cache", "files", "bytes", "seconds", "checksums"}`` (``checksums``: whether contents were
        compared with a record; False for a cache written before checksums).
    Raises:
        DataError: listing every chunk file that does not match (exit status 2 from the tool).
    """
    from ppssld.cache.manifest import read_manifest

    start = time.perf_counter()
    manifest = read_manifest(root)
    record = manifest.get("chunks")
    problems: List[Tuple[str, str]] = []
    files = size = 0
    for v, c in tasks(manifest):
        for path, (shape, dtype) in zip(store.chunk_paths(root, v, c), store.chunk_layout(manifest, c)):
            rel = os.path.relpath(path, root)
            why = npy_difference(path, shape, dtype)
            if why is None and record is not None:
                why = record_difference(path, record[rel], full=True) if rel in record else "not in the record"
            if why is not None:
                problems.append((path, why))
            files += 1
            size += os.path.getsize(path) if os.path.isfile(path) else 0
    if problems:
        raise DataError(problems_message(f"soft-label cache {root}", problems, REGENERATE))
    return {"cache": root, "files": files, "bytes": size, "seconds": round(time.perf_counter() - start, 3),
            "checksums": record is not None}

