"""On-disk layout of a soft-label cache: memory-mappable chunks of top-K probabilities and classes.

A cache folder holds ``manifest.json`` and, per view ``v`` and chunk ``c`` (images
``[c * chunk_size, (c + 1) * chunk_size)`` of the dataset's record order), two ``.npy`` files:

* ``v{v:04d}/c{c:06d}.cls.npy``: ``(n, K)`` class indices in the smallest unsigned type that holds
  the class count (uint8 up to 256 classes, uint16 up to 65,536, else uint32);
* ``v{v:04d}/c{c:06d}.prob.npy``: ``(n, K)`` probabilities (float16, or float32 when asked), in
  descending order, so column 0 is the teacher's top-1; in an exact cache (manifest ``values:
  logits``: K = class count, float32) the teacher's logits instead, in the same order.

Each file is written to a temporary name and renamed; the ``.prob`` file is written last, so a
chunk whose ``.prob`` file exists is complete. ``.npy`` files open with ``np.load(mmap_mode="r")``:
training reads only the rows of its batch.
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ppssld.utils.chunk_files import npy_difference
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.io import atomic_path

PROB_DTYPES = ("float16", "float32")
VALUE_KINDS = ("probs", "logits")  # what the ``.prob`` files hold (manifest ``values``; version 1: probs)


def index_dtype(class_num: int) -> np.dtype:
    """The smallest unsigned integer type that holds every class index of ``class_num`` classes."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if class_num - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ConfigError(f"class count {class_num} does not fit uint32")


def chunk_count(num_images: int, chunk_size: int) -> int:
    """Chunks per view."""
    return (num_images + chunk_size - 1) // chunk_size


def chunk_paths(root: str, view: int, chunk: int) -> Tuple[str, str]:
    """``(cls path, prob path)`` of one chunk."""
    base = os.path.join(root, f"v{view:04d}", f"c{chunk:06d}")
    return base + ".cls.npy", base + ".prob.npy"


def chunk_layout(manifest: Dict[str, Any], chunk: int) -> List[Tuple[Tuple[int, int], np.dtype]]:
    """``[(shape, dtype) of the .cls file, (shape, dtype) of the .prob file]`` of chunk ``chunk``, from a
    manifest or plan (``num_images``, ``chunk_size``, ``topk``, ``index_dtype``, ``prob_dtype``)."""
    rows = min(int(manifest["chunk_size"]), int(manifest["num_images"]) - chunk * int(manifest["chunk_size"]))
    shape = (rows, int(manifest["topk"]))
    return [(shape, np.dtype(manifest["index_dtype"])), (shape, np.dtype(manifest["prob_dtype"]))]


def chunk_done(root: str, view: int, chunk: int) -> bool:
    """Whether a chunk was completely written (its ``.prob`` file, written last, exists)."""
    cls_path, prob_path = chunk_paths(root, view, chunk)
    return os.path.isfile(prob_path) and os.path.isfile(cls_path)


def _save(path: str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)


def _memory_map(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:  # no manifest to compare with: still one message naming the file
        raise DataError(f"soft-label cache chunk file {path} cannot be memory-mapped ({exc}): it is damaged; "
                        f"delete it and re-run tools/cache_soft_labels.py with the same arguments") from exc


def write_chunk(root: str, view: int, chunk: int, probs: np.ndarray, classes: np.ndarray) -> None:
    """Write one chunk atomically (classes first, probabilities last: the completion mark)."""
    cls_path, prob_path = chunk_paths(root, view, chunk)
    _save(cls_path, classes)
    _save(prob_path, probs)


class ChunkReader:
    """Memory-maps a cache's chunks on first use and gathers rows by dataset index.

    Each chunk's two ``.npy`` headers are checked against ``manifest`` (shape, dtype, and the size they imply)
    as it is first opened: a damaged file is a :class:`DataError` naming it and what differs.

    Args:
        root: the cache folder.
        chunk_size: images per chunk (from the manifest).
        num_images: images per view.
        manifest: the cache's manifest (None: headers are not compared with it, only read).
    """

    def __init__(self, root: str, chunk_size: int, num_images: int,
                 manifest: Optional[Dict[str, Any]] = None) -> None:
        self.root, self.chunk_size, self.num_images = root, int(chunk_size), int(num_images)
        self.manifest = manifest
        self._open: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> Dict[str, Any]:
        """Pickled (a loader worker started by spawn) without its memory maps: the copy opens its own."""
        return dict(self.__dict__, _open={})

    def _chunk(self, view: int, chunk: int) -> Tuple[np.ndarray, np.ndarray]:
        key = (view, chunk)
        if key not in self._open:
            cls_path, prob_path = chunk_paths(self.root, view, chunk)
            if not chunk_done(self.root, view, chunk):
                raise DataError(f"soft-label cache {self.root}: chunk {prob_path} is missing; the cache is incomplete "
                                f"(re-run tools/cache_soft_labels.py with the same arguments to finish it)")
            if self.manifest is not None:
                for path, (shape, dtype) in zip((cls_path, prob_path), chunk_layout(self.manifest, chunk)):
                    why = npy_difference(path, shape, dtype)
                    if why is not None:
                        raise DataError(f"soft-label cache {self.root}: chunk file {path} is damaged: {why}. "
                                        f"Delete it and re-run tools/cache_soft_labels.py with the same arguments "
                                        f"(it writes the chunk again); --verify {self.root} checks every file")
            self._open[key] = (_memory_map(prob_path), _memory_map(cls_path))
        return self._open[key]

    def gather(self, view: int, indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(probs float32 (n, K), classes int64 (n, K))`` of images ``indices`` in view ``view``."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_images):
            raise DataError(f"soft-label cache {self.root}: image index {int(indices.max())} is outside the "
                            f"{self.num_images} cached images")
        chunks, rows = np.divmod(indices, self.chunk_size)
        first_p, first_c = self._chunk(view, int(chunks[0])) if indices.size else (None, None)
        k = first_p.shape[1] if first_p is not None else 0
        probs = np.empty((indices.size, k), np.float32)
        classes = np.empty((indices.size, k), np.int64)
        for chunk in np.unique(chunks):
            where = np.nonzero(chunks == chunk)[0]
            p, c = self._chunk(view, int(chunk))
            probs[where] = p[rows[where]]
            classes[where] = c[rows[where]]
        return probs, classes
