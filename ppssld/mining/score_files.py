"""Score chunk files and their checksum records: what counts as scored, and the check before selection.

Each ``chunk_NNNNNN.npz`` gets, once written, a record ``chunk_NNNNNN.sum.json`` (``{"size", "blake2b"}``,
:func:`ppssld.utils.fingerprint.file_fingerprint`, the project's one hash); the record is written last, so
it is the chunk's completion mark. Whichever rank writes a chunk writes its record, so no file is shared
between ranks. What is checked:

* a resumed run (:func:`chunk_state`) keeps a chunk only if its size and content hash match its record; a
  chunk without a record (a run killed between the two files, or scored before records existed) is kept
  when it loads completely with the rows it should hold, and its record is written then; anything else
  is scored again, with one warning naming the file and what differed;
* before de-duplication results are merged and images selected, rank 0 checks every chunk against its
  record (:func:`check_chunks`, sizes and hashes: selection reads every chunk in full anyway), so a chunk
  damaged since it was written is named with what differs, not met as a ``BadZipFile`` traceback.
"""
import json
import logging
import os
import zipfile
from typing import List, Optional, Tuple

import numpy as np

from ppssld.utils.chunk_files import problems_message, record_difference
from ppssld.utils.errors import DataError
from ppssld.utils.fingerprint import file_fingerprint
from ppssld.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

KEEP, ADOPTED, REDO = "keep", "adopted", "redo"


def chunk_path(out_dir: str, c: int) -> str:
    """The file of chunk ``c``."""
    return os.path.join(out_dir, f"chunk_{c:06d}.npz")


def record_path(out_dir: str, c: int) -> str:
    """The checksum record of chunk ``c`` (its completion mark)."""
    return os.path.join(out_dir, f"chunk_{c:06d}.sum.json")


def write_record(out_dir: str, c: int) -> None:
    """Record chunk ``c``'s size and content hash (after the chunk itself is in place)."""
    atomic_write_json(record_path(out_dir, c), file_fingerprint(chunk_path(out_dir, c)))


def read_record(out_dir: str, c: int) -> Optional[dict]:
    """Chunk ``c``'s record, or None when there is none (or it is unreadable: then the chunk is redone)."""
    try:
        with open(record_path(out_dir, c), "r", encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def loads_completely(path: str, rows: int, offset: int) -> Optional[str]:
    """None if the ``.npz`` at ``path`` reads in full with ``index`` = ``offset .. offset + rows - 1``; else why not."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        return f"does not load ({type(exc).__name__}: {exc})"
    index = arrays.get("index")
    if index is None or not np.array_equal(index, np.arange(offset, offset + rows)):
        return f"does not hold pool rows {offset}..{offset + rows - 1}"
    return None


def chunk_state(out_dir: str, c: int, rows: int, offset: int) -> str:
    """:data:`KEEP` (scored and matching its record), :data:`ADOPTED` (no record, loads: record written now) or
    :data:`REDO` (missing or damaged: score it again), logging why a chunk that exists is redone."""
    path = chunk_path(out_dir, c)
    if not os.path.isfile(path):
        return REDO
    record = read_record(out_dir, c)
    if record is not None:
        why = record_difference(path, record, full=True)
        if why is None:
            return KEEP
    else:
        why = loads_completely(path, rows, offset)
        if why is None:
            write_record(out_dir, c)
            logger.info("%s had no checksum record (scored before records, or killed before writing it): it "
                        "loads completely, record written", path)
            return ADOPTED
    logger.warning("%s does not match (%s): scoring chunk %d again", path, why, c)
    return REDO


def check_chunks(out_dir: str, n_chunks: int) -> None:
    """Every chunk against its record, sizes and content hashes (rank 0, before de-duplication and selection).

    Raises:
        DataError: naming each chunk file that is missing, has no record or does not match it.
    """
    problems: List[Tuple[str, str]] = []
    for c in range(n_chunks):
        path, record = chunk_path(out_dir, c), read_record(out_dir, c)
        why = "no checksum record" if record is None else record_difference(path, record, full=True)
        if why is not None:
            problems.append((path, why))
    if problems:
        raise DataError(problems_message(f"mining scores {out_dir}", problems,
                                         "Delete the files named (and their .sum.json records) and run the same "
                                         "mining command again: it scores those chunks again"))
