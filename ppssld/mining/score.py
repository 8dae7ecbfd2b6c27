"""Score an image pool with the teacher: batched, chunked, resumable, shardable.

The pool is cut into fixed chunks of ``chunk_size`` images. Each chunk is read, decoded
once (the de-duplication signature and the teacher's eval transforms both use that array),
scored in batches of ``batch_size`` and written atomically as ``chunk_NNNNNN.npz``. A
killed run finds its finished chunks and continues; since a chunk's content and batching
never depend on what ran before it, the result equals an uninterrupted run. Under
``paddle.distributed.launch`` rank r takes chunks r, r+W, r+2W, ... and rank 0 merges
(:mod:`ppssld.teacher.shards`; the chunk loop is :func:`ppssld.teacher.chunk_pass.run_chunks`).

Per image a chunk stores: the top-N probabilities and class indices, whether it could be
read (and the error when not), the de-duplication signature and, optionally, the
penultimate feature (float16).
"""
import logging
import os
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from ppssld.data.image import decode_file, decode_file_grey, transform_image
from ppssld.data.transforms import Compose
from ppssld.mining.dedup import near_duplicates as dedup
from ppssld.mining.dedup.signatures import signature_arrays
from ppssld.mining.score_files import REDO, check_chunks, chunk_path, chunk_state, record_path, write_record
from ppssld.teacher.chunk_pass import fixed_batches, run_chunks
from ppssld.teacher.frozen import Teacher
from ppssld.teacher.shards import claim_folder, read_json, share, wait_until
from ppssld.utils.errors import DataError
from ppssld.utils.fingerprint import lines_digest
from ppssld.utils.io import atomic_save
from ppssld.utils.topk import top_k

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 3  # 2: errors stored only for the images that had one; 3: pool_digest (BLAKE2b, was pool_sha1)


class Scores(NamedTuple):
    """Merged scores of a whole pool (row i is pool image i)."""
    ok: np.ndarray        # (n,) bool: the image was read and scored
    error: Dict[int, str]  # pool index -> why it could not be read (only images that had an error)
    prob: np.ndarray      # (n, N) float32, descending
    cls: np.ndarray       # (n, N) int32 class indices (-1 for unread images)
    hash: np.ndarray      # (n, B) uint8 packed perceptual hash
    thumb: np.ndarray     # (n, 256) float16
    grey: np.ndarray      # (n, 1024) uint8
    side: np.ndarray      # (n,) int32
    feature: Optional[np.ndarray]  # (n, D) float16 or None

    def signature(self, i: int) -> dedup.Signature:
        """The de-duplication signature of pool image ``i``."""
        return dedup.Signature(self.hash[i], self.thumb[i].astype(np.float32), self.grey[i], int(self.side[i]))


def _load_one(path: str, transform: Compose) -> tuple:
    """Decode once (with the chain's decoder) for both the teacher's input and the signature's grey image."""
    try:
        rgb = decode_file(path, transform)
        net = transform_image(rgb, transform)
        grey = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        return rgb, net, grey, ""
    except (DataError, ValueError, OSError, cv2.error) as exc:
        return None, None, None, error_message(exc)


def _load_chunk(paths: Sequence[str], image_root: str, transform: Compose, kind: str, size: int) -> tuple:
    """A chunk's decoded images and their signatures, hashed as one stack (equal to :func:`dedup.signature`
    of each image, tested): (list of ``_load_one`` results, signature arrays of the readable ones)."""
    loaded = [_load_one(os.path.join(image_root, p), transform) for p in paths]
    return loaded, signature_arrays([item[2] for item in loaded if item[0] is not None], kind, size)


def error_message(exc: Exception) -> str:
    """``Type: message`` without memory addresses (so reruns write identical reports)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(exc).__name__}: {exc}")


def _refuse_or_restart(out_dir: str, changed: List[str], restart: bool) -> None:
    """Rank 0's rule for a manifest of another run: refuse the folder, or (``restart``) discard its chunks.

    Raises:
        DataError: the folder holds scores of a different pool, teacher or setting.
    """
    if not restart:
        raise DataError(f"{out_dir} holds scores of another run (differs in {', '.join(changed)}); "
                        f"use a new folder or pass restart=True (--restart) to discard them")
    for name in os.listdir(out_dir):
        if name.startswith(("chunk_", "dedup_")) and name.endswith((".npz", ".json")):
            os.remove(os.path.join(out_dir, name))


def score_pool(teacher: Teacher, paths: Sequence[str], image_root: str, transform: Compose, out_dir: str,
               topn: int = 10, batch_size: int = 64, chunk_size: int = 1024, features: bool = False,
               hash_kind: str = dedup.DEFAULT_HASH, hash_size: int = dedup.DEFAULT_HASH_SIZE,
               rank: int = 0, world_size: int = 1, restart: bool = False,
               max_chunks: Optional[int] = None, prefetch: bool = True,
               on_chunk: Optional[Callable[[int, Dict[str, np.ndarray]], None]] = None,
               on_loaded: Optional[Callable[[int, Dict[str, np.ndarray]], None]] = None) -> Dict[str, Any]:
    """Score this rank's chunks of the pool; finished chunks are skipped.

    Args:
        teacher: the model.
        paths: pool image paths relative to ``image_root``.
        image_root: folder the paths are relative to.
        transform: the config's eval transforms; images go through :mod:`ppssld.data.image` as in the
            dataset (an HWC result is transposed to CHW, PaddleClas's convention).
        out_dir: folder for the manifest and chunks.
        topn: top-N probabilities kept per image (capped at the class count).
        batch_size: images per forward pass.
        chunk_size: images per chunk file (the unit of resumption).
        features: also store the penultimate feature.
        hash_kind, hash_size: perceptual hash of the signatures.
        rank, world_size: this process's shard.
        restart: discard scores of a different run found in ``out_dir``.
        max_chunks: stop after this many new chunks (for tests of resumption).
        prefetch: read the next chunk in a background thread while the teacher runs.
        on_chunk: called with (chunk number, its arrays) after each new chunk is saved (mining hands
            it to a de-duplication thread, which then overlaps the teacher).
        on_loaded: called with (chunk number, its signature arrays: ``index``, ``ok``, ``hash``, ``thumb``,
            ``grey``, ``side``, as saved) as soon as a chunk is decoded, before the teacher scores it.
    Returns:
        Counters: ``chunks``, ``done_before``, ``scored_now``, ``images_now``, ``seconds``,
        ``seconds_waiting_for_images`` (the teacher idle while a chunk is read and hashed).
    """
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"version": FORMAT_VERSION, "count": len(paths), "pool_digest": lines_digest(paths),
                "teacher": teacher.description, "topn": int(topn), "chunk_size": int(chunk_size),
                "features": bool(features), "hash": hash_kind, "hash_size": int(hash_size),
                "batch_size": int(batch_size)}
    # rank 0 alone judges an existing manifest; the other ranks wait for one to exist
    claim_folder(out_dir, MANIFEST, manifest, rank, lambda _old, changed: _refuse_or_restart(out_dir, changed, restart),
                 peers_check=False)
    n_chunks = (len(paths) + chunk_size - 1) // chunk_size

    def done(c: int) -> bool:  # kept: matching its checksum record
        return chunk_state(out_dir, c, min(chunk_size, len(paths) - c * chunk_size), c * chunk_size) != REDO

    def load(c: int) -> tuple:
        return _load_chunk(paths[c * chunk_size:(c + 1) * chunk_size], image_root, transform, hash_kind, hash_size)

    def process(c: int, chunk: tuple) -> int:
        loaded, sigs = chunk
        signatures = _signature_arrays(loaded, sigs, c * chunk_size)
        if on_loaded is not None:
            on_loaded(c, signatures)
        arrays = _score_chunk(teacher, loaded, signatures, topn, batch_size, features)
        atomic_save(chunk_path(out_dir, c), lambda tmp, a=arrays: _save_npz(tmp, a))
        write_record(out_dir, c)  # last: the chunk's completion mark
        if on_chunk is not None:
            on_chunk(c, arrays)
        return len(loaded)

    run = run_chunks(share(range(n_chunks), rank, world_size), done, load, process, prefetch, max_chunks,
                     f"scoring (rank {rank})" if rank == 0 else None, "scored")
    return {"chunks": n_chunks, "done_before": run.done_before, "scored_now": run.done_now,
            "images_now": run.images_now, "seconds_waiting_for_images": run.seconds_waiting, "seconds": run.seconds}


def _save_npz(tmp: str, arrays: Dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _signature_arrays(loaded: List[tuple], sigs: Dict[str, np.ndarray], offset: int) -> Dict[str, np.ndarray]:
    """The de-duplication part of a chunk's arrays: ``sigs`` of its readable images, zeros for the others."""
    ok = np.array([item[0] is not None for item in loaded], dtype=bool)
    arrays = dict(_spread(ok, sigs), index=np.arange(offset, offset + len(loaded), dtype=np.int64), ok=ok)
    arrays["thumb"] = arrays["thumb"].astype(np.float16)
    return arrays


def _spread(ok: np.ndarray, sigs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Signature arrays of the ``ok`` rows (in order) spread over all rows, zeros elsewhere."""
    out = {}
    for key, value in sigs.items():
        out[key] = np.zeros((len(ok),) + value.shape[1:], value.dtype)
        out[key][ok] = value
    return out


def _score_chunk(teacher: Teacher, loaded: List[tuple], signatures: Dict[str, np.ndarray], topn: int,
                 batch_size: int, features: bool) -> Dict[str, np.ndarray]:
    """The chunk's saved arrays: its ``signatures`` (:func:`_signature_arrays`, shared, not copied) plus the
    teacher's top-N, the per-image errors and (``features``) the teacher's features."""
    n, offset = len(loaded), int(signatures["index"][0]) if len(loaded) else 0
    good = np.flatnonzero(signatures["ok"])
    probs, feats = [], []
    for batch in fixed_batches((loaded[i][1] for i in good), batch_size):
        p, f = teacher(batch, features)
        probs.append(p)
        feats.append(f)
    n_top = min(topn, probs[0].shape[1]) if probs else topn
    prob = np.zeros((n, n_top), np.float32)
    cls = np.full((n, n_top), -1, np.int32)
    if probs:
        prob[good], cls[good] = top_k(np.concatenate(probs), n_top)
    arrays = dict(signatures, prob=prob, cls=cls,
                  error_index=np.array([offset + i for i, item in enumerate(loaded) if item[3]], np.int64),
                  error_text=np.array([item[3] for item in loaded if item[3]], dtype=str))
    if features:
        dim = feats[0].shape[1] if feats else 0
        feature = np.zeros((n, dim), np.float16)
        if feats:
            feature[good] = np.concatenate(feats).astype(np.float16)
        arrays["feature"] = feature
    return arrays


def wait_for_chunks(out_dir: str, count: int, chunk_size: int, timeout: float = 24 * 3600) -> None:
    """Block until every chunk of a ``count``-image pool exists (rank 0 waits for the others)."""
    n_chunks = (count + chunk_size - 1) // chunk_size
    wait_until(lambda: all(os.path.isfile(record_path(out_dir, c)) for c in range(n_chunks)), timeout,
               f"all {n_chunks} chunks in {out_dir}")


def read_manifest(out_dir: str) -> Dict[str, Any]:
    """The manifest of a scoring folder.

    Raises:
        DataError: there is none (score the pool first).
    """
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        raise DataError(f"{out_dir} has no {MANIFEST}: score the pool first")
    return read_json(path)


def load_scores(out_dir: str) -> Scores:
    """Merge every chunk of a finished scoring run.

    Raises:
        DataError: no manifest, or chunks missing (the run is not finished: run it again).
    """
    manifest = read_manifest(out_dir)
    n_chunks = (manifest["count"] + manifest["chunk_size"] - 1) // manifest["chunk_size"]
    missing = [c for c in range(n_chunks) if not os.path.isfile(record_path(out_dir, c))]
    if missing:
        raise DataError(f"{out_dir}: {len(missing)} of {n_chunks} chunks are missing (first {missing[:5]}); "
                        f"the scoring run is unfinished: run it again to resume")
    check_chunks(out_dir, n_chunks)
    parts: Dict[str, List[np.ndarray]] = {}
    for c in range(n_chunks):
        with np.load(chunk_path(out_dir, c), allow_pickle=False) as data:
            for key in data.files:
                parts.setdefault(key, []).append(data[key])
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    errors = {int(i): str(t) for i, t in zip(cat["error_index"], cat["error_text"])}
    if len(cat.get("index", [])) != manifest["count"] or not np.array_equal(cat["index"],
                                                                           np.arange(manifest["count"])):
        raise DataError(f"{out_dir}: chunks do not cover the pool 0..{manifest['count'] - 1} exactly")
    return Scores(cat["ok"], errors, cat["prob"], cat["cls"], cat["hash"], cat["thumb"],
                  cat["grey"], cat["side"], cat.get("feature"))


def reference_signatures(paths: Sequence[str], image_root: str, kind: str = dedup.DEFAULT_HASH,
                         size: int = dedup.DEFAULT_HASH_SIZE) -> tuple:
    """Signature arrays of reference images (eval or train list); unreadable ones are reported, not fatal.

    Decoded straight to grey (:func:`ppssld.data.image.decode_file_grey`) and hashed as one stack
    (:func:`ppssld.mining.dedup.signatures.signature_arrays`): equal to :func:`dedup.signature` of each
    ``decode_file`` image, bit for bit (tested), at a fraction of its cost.

    Returns:
        (arrays ``ok``, ``hash``, ``thumb``, ``grey``, ``side`` with zeros for unreadable images,
        list of (path, error) for unreadable images).
    """
    greys: List[np.ndarray] = []
    ok = np.zeros(len(paths), bool)
    bad = []
    for i, p in enumerate(paths):
        try:
            greys.append(decode_file_grey(os.path.join(image_root, p)))
            ok[i] = True
        except (DataError, ValueError, OSError) as exc:
            bad.append((p, error_message(exc)))
    return dict(_spread(ok, signature_arrays(greys, kind, size)), ok=ok), bad
