"""De-duplication and selection over the scored chunks, sharded across ranks, streaming.

Under ``paddle.distributed.launch`` every rank takes part (files are the only channel, as
in :mod:`ppssld.mining.score`; rank split and poll loop: :mod:`ppssld.teacher.shards`):

1. before scoring, the reference list (eval, train) is cut into chunks of :data:`REF_CHUNK`;
   rank r hashes chunks r, r+W, ... into ``ref_<tag>_NNNNNN.npz`` (plus teacher features when
   asked) and every rank loads them all into a :class:`~ppssld.mining.dedup.index.RefIndex`;
2. rank r de-duplicates each pool chunk it scores in a background thread while the teacher
   scores the next one (:func:`dedup_arrays`), then any of its chunks scored by an earlier run
   (:func:`dedup_chunks`), writing ``dedup_<key>_NNNNNN.json`` (the removed rows and the
   counters of that chunk); ``key`` hashes the scores' manifest, the references and the
   settings, so changed thresholds never reuse old decisions, and a killed run resumes;
3. rank 0 merges the (small) de-duplication files and selects with
   :class:`~ppssld.mining.select.StreamingTopK`, reading one score chunk at a time.
"""
import json
import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ppssld.data.image import load_and_transform
from ppssld.data.transforms import Compose
from ppssld.mining.dedup import confirm as confirm_mod
from ppssld.mining.dedup import near_duplicates as dedup
from ppssld.mining.dedup.index import FeatureIndex, RefIndex
from ppssld.mining.report import duplicate_entries
from ppssld.mining.score import chunk_path, read_manifest, reference_signatures
from ppssld.mining.select import Selection, StreamingTopK
from ppssld.teacher.frozen import Teacher
from ppssld.teacher.shards import share, wait_until
from ppssld.utils.fingerprint import digest
from ppssld.utils.io import atomic_save, atomic_write_json

logger = logging.getLogger(__name__)

REF_CHUNK = 2048


class Reference(NamedTuple):
    """A reference list ready for search: index over its readable images, their paths, unreadable ones."""
    index: RefIndex
    paths: List[str]
    bad: List[Tuple[str, str]]
    features: Optional[FeatureIndex]


def _short_digest(*parts: Any) -> str:
    return digest(list(parts))[:12]


def reference(paths: Sequence[str], root: str, work: str, rank: int, world: int, teacher: Optional[Teacher] = None,
              transform: Optional[Compose] = None, batch_size: int = 64, threshold: int = dedup.DEFAULT_THRESHOLD,
              timeout: float = 24 * 3600) -> Reference:
    """Sharded signatures (and features when ``teacher``) of a reference list, then its index."""
    tag = _short_digest(list(paths), root, dedup.DEFAULT_HASH, dedup.DEFAULT_HASH_SIZE,
                teacher.description if teacher else None)
    n_chunks = (len(paths) + REF_CHUNK - 1) // REF_CHUNK
    files = [os.path.join(work, f"ref_{tag}_{c:06d}.npz") for c in range(n_chunks)]
    for c in share(range(n_chunks), rank, world):
        if not os.path.isfile(files[c]):
            arrays = _ref_chunk(paths[c * REF_CHUNK:(c + 1) * REF_CHUNK], root, teacher, transform, batch_size)
            atomic_save(files[c], lambda tmp, a=arrays: _save_npz(tmp, a))
    wait_until(lambda: all(os.path.isfile(f) for f in files), timeout, f"the {n_chunks} reference chunks in {work}")
    parts: Dict[str, List[np.ndarray]] = {}
    for f in files:
        with np.load(f, allow_pickle=False) as data:
            for key in data.files:
                parts.setdefault(key, []).append(data[key])
    cat = {k: np.concatenate(v) for k, v in parts.items()} if parts else {}
    ok = cat.get("ok", np.zeros(0, bool))
    bad = [(paths[int(i)], str(e)) for i, e in zip(cat.get("error_index", []), cat.get("error_text", []))]
    sigs = confirm_mod.Sigs(cat["hash"][ok], cat["thumb"][ok].astype(np.float32), cat["grey"][ok], cat["side"][ok]) \
        if parts else confirm_mod.Sigs(np.zeros((0, 8), np.uint8), np.zeros((0, 256), np.float32),
                                       np.zeros((0, 1024), np.uint8), np.zeros(0, np.int32))
    feats = FeatureIndex(cat["feature"][ok]) if teacher is not None and "feature" in cat and ok.any() else None
    kept = [p for p, good in zip(paths, ok) if good]
    return Reference(RefIndex(sigs, threshold), kept, bad, feats)


def _save_npz(tmp: str, arrays: Dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _ref_chunk(paths: Sequence[str], root: str, teacher: Optional[Teacher], transform: Optional[Compose],
               batch_size: int) -> Dict[str, np.ndarray]:
    sigs, bad = reference_signatures(paths, root)
    errors = {i: e for i, (_p, e) in zip(np.flatnonzero(~sigs["ok"]).tolist(), bad)}
    ok = sigs["ok"]
    arrays = {"ok": ok, "error_index": np.array(sorted(errors), np.int64),
              "error_text": np.array([errors[i] for i in sorted(errors)], dtype=str),
              "hash": sigs["hash"], "thumb": sigs["thumb"].astype(np.float16), "grey": sigs["grey"],
              "side": sigs["side"]}
    if teacher is not None:
        good = [p for p, readable in zip(paths, ok) if readable]
        feats = [teacher(np.stack([load_and_transform(os.path.join(root, q), transform)
                                   for q in good[s:s + batch_size]]), features=True)[1]
                 for s in range(0, len(good), batch_size)]
        dim = feats[0].shape[1] if feats else 1
        feature = np.zeros((len(paths), dim), np.float16)
        feature[ok] = np.concatenate(feats).astype(np.float16) if feats else 0
        arrays["feature"] = feature
    return arrays


class DedupSettings(NamedTuple):
    """What decides a duplicate (part of the result files' key)."""
    threshold: int = dedup.DEFAULT_THRESHOLD
    pixel_thresholds: Optional[Tuple[float, float]] = dedup.DEFAULT_PIXEL_THRESHOLDS
    ranking: str = "grid"
    grid_min: float = confirm_mod.DEFAULT_GRID_MIN
    max_checks: int = dedup.DEFAULT_MAX_CHECKS
    feature_threshold: Optional[float] = None
    check: str = dedup.DEFAULT_CHECK


def dedup_key(score_dir: str, refs: Sequence[Tuple[str, Reference]], settings: DedupSettings) -> str:
    """Key of the de-duplication result files: scores, references and settings."""
    manifest = read_manifest(score_dir)
    return _short_digest(manifest["pool_digest"], manifest["teacher"], [(a, r.paths) for a, r in refs], settings)


def dedup_file(score_dir: str, key: str, c: int) -> str:
    """The result file of chunk ``c``."""
    return os.path.join(score_dir, f"dedup_{key}_{c:06d}.json")


def dedup_arrays(arrays: Dict[str, np.ndarray], paths: Sequence[str], refs: Sequence[Tuple[str, Reference]],
                 settings: DedupSettings, out: str) -> None:
    """De-duplicate one score chunk (its arrays) against every reference; write ``out`` atomically."""
    ok, index = arrays["ok"], arrays["index"]
    rows = np.flatnonzero(ok)
    sigs = confirm_mod.Sigs(arrays["hash"][rows], arrays["thumb"][rows].astype(np.float32), arrays["grey"][rows],
                            arrays["side"][rows])
    feature = arrays["feature"][rows] if "feature" in arrays else None
    removed: Dict[int, Dict[str, Any]] = {}
    stats: Dict[str, Dict[str, int]] = {}
    pool_paths = [paths[int(index[r])] for r in rows]
    for against, ref in refs:
        matches, st = ref.index.find(sigs, settings.max_checks, settings.pixel_thresholds, settings.ranking,
                                     settings.grid_min, settings.check)
        for m, row in zip(matches, duplicate_entries(matches, pool_paths, ref.paths, against)):
            if m.grid == m.grid:
                row["aligned_band_pass"] = round(float(m.grid), 4)
            removed.setdefault(int(index[rows[m.query]]), row)
        if settings.feature_threshold is not None and ref.features is not None and feature is not None:
            qi, rj, cos = ref.features.nearest(feature.astype(np.float32), settings.feature_threshold)
            for q, r, s in zip(qi, rj, cos):
                removed.setdefault(int(index[rows[q]]), {"pool_image": pool_paths[int(q)], "against": against,
                                                         "matched_image": ref.paths[int(r)],
                                                         "feature_cosine": round(float(s), 4)})
            st = dict(st, feature_matches=int(len(qi)))
        stats[against] = dict(st, removed=len(matches))
    atomic_write_json(out, {"removed": {str(i): removed[i] for i in sorted(removed)}, "stats": stats})


def dedup_chunks(score_dir: str, paths: Sequence[str], refs: Sequence[Tuple[str, Reference]],
                 settings: DedupSettings, rank: int, world: int) -> str:
    """De-duplicate this rank's score chunks that have no result file yet; returns the result-file key."""
    manifest = read_manifest(score_dir)
    key = dedup_key(score_dir, refs, settings)
    n_chunks = (manifest["count"] + manifest["chunk_size"] - 1) // manifest["chunk_size"]
    for c in share(range(n_chunks), rank, world):
        out = dedup_file(score_dir, key, c)
        if not os.path.isfile(out):
            with np.load(chunk_path(score_dir, c), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files if k not in ("prob", "cls")}
            dedup_arrays(arrays, paths, refs, settings, out)
    return key


def merge_dedup(score_dir: str, key: str, n_chunks: int,
                timeout: float = 24 * 3600) -> Tuple[Dict[int, Dict[str, Any]], Dict[str, Dict[str, int]]]:
    """Rank 0: wait for every chunk's de-duplication file, merge removed rows and counters."""
    files = [os.path.join(score_dir, f"dedup_{key}_{c:06d}.json") for c in range(n_chunks)]
    wait_until(lambda: all(os.path.isfile(f) for f in files), timeout, f"the {n_chunks} de-duplication files")
    removed: Dict[int, Dict[str, Any]] = {}
    stats: Dict[str, Dict[str, int]] = {}
    for f in files:
        with open(f, "r", encoding="utf-8") as handle:
            part = json.load(handle)
        removed.update({int(i): row for i, row in part["removed"].items()})
        for against, st in part["stats"].items():
            total = stats.setdefault(against, {})
            for name, value in st.items():
                total[name] = total.get(name, 0) + int(value)
    return removed, stats


def select_streaming(score_dir: str, k: int, class_num: int, removed: Dict[int, Any], min_conf: float = 0.0,
                     cap: Optional[int] = None) -> Tuple[Selection, Dict[int, str], np.ndarray]:
    """Top-k per class reading one chunk at a time: (selection, errors by pool index, top-1 probabilities)."""
    manifest = read_manifest(score_dir)
    n_chunks = (manifest["count"] + manifest["chunk_size"] - 1) // manifest["chunk_size"]
    acc = StreamingTopK(k, class_num, min_conf)
    errors: Dict[int, str] = {}
    top1: List[np.ndarray] = []
    gone = np.array(sorted(removed), np.int64)
    for c in range(n_chunks):
        with np.load(chunk_path(score_dir, c), allow_pickle=False) as data:
            ok, prob, cls, index = data["ok"], data["prob"], data["cls"], data["index"]
            errors.update({int(i): str(t) for i, t in zip(data["error_index"], data["error_text"])})
        valid = ok & ~np.isin(index, gone)
        acc.add(prob, cls, valid, int(index[0]) if len(index) else acc.next_index)
        top1.append(prob[ok, 0] if prob.shape[1] else np.zeros(0, np.float32))
    return acc.result(cap), errors, np.concatenate(top1) if top1 else np.zeros(0, np.float32)
