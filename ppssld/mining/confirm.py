"""Confirmation of near-duplicate candidates: aligned band-pass ranking, then the pixel check.

Candidate pairs (from the scan in :mod:`ppssld.mining.dedup` or the index in
:mod:`ppssld.mining.dedup_index`) are grouped by query. Two ranking policies choose which
candidates get the (per pair, ``cv2.findTransformECC``) pixel check:

- ``"grid"`` (default): every candidate is scored, vectorised over the candidate batch, by the
  best band-pass correlation of the query under :data:`WARPS` (identity, and a 4% zoom
  anchored at 9 positions: the slight crops the wild makes) with the reference. Warping and
  band-pass filtering are linear, so they are one precomputed matrix (1024 -> G x 784) and
  the scores are one matrix product per query. Candidates below :data:`DEFAULT_GRID_MIN` are
  dropped; the best :data:`~ppssld.mining.dedup.DEFAULT_MAX_CHECKS` go to the pixel check.
  Measured on Fashion-MNIST (``benchmark/results/mining_scale.md``): every planted source
  ranks first (the thumbnail ranked a crop's source up to 50th, which is how 3 of 100 crops
  were missed), the lowest planted score is 0.974, and 88% of the pixel checks are skipped.
- ``"thumb"``: today's policy before this module (rank by thumbnail correlation, no floor),
  kept to measure before/after.
"""
import functools
import logging
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

logger = logging.getLogger(__name__)

GREY = 32
MARGIN = 2
DEFAULT_GRID_MIN = 0.93
RANKINGS = ("grid", "thumb")


def _warps() -> List[np.ndarray]:
    out = [np.array([[1, 0, 0], [0, 1, 0]], np.float32)]
    for s in (0.96,):
        for dx in (0.0, 0.5, 1.0):
            for dy in (0.0, 0.5, 1.0):
                out.append(np.array([[s, 0, (1 - s) * GREY * dx], [0, s, (1 - s) * GREY * dy]], np.float32))
    return out


WARPS = _warps()


def _band(x: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), 0.8) - cv2.GaussianBlur(x, (0, 0), 2.5)


@functools.lru_cache(maxsize=1)
def _operator() -> np.ndarray:
    """(1024, G*D) float32: grey 32x32 -> band-pass of each warp, border of MARGIN dropped."""
    side = GREY - 2 * MARGIN
    cols = np.zeros((GREY * GREY, len(WARPS), side * side), np.float32)
    for p in range(GREY * GREY):
        e = np.zeros((GREY, GREY), np.float32)
        e.flat[p] = 1.0
        for g, w in enumerate(WARPS):
            img = cv2.warpAffine(e, w, (GREY, GREY), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            cols[p, g] = _band(img)[MARGIN:-MARGIN, MARGIN:-MARGIN].ravel()
    return cols.reshape(GREY * GREY, -1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def band_vectors(grey: np.ndarray, block: int = 4096) -> np.ndarray:
    """Zero-mean unit band-pass vectors of 32x32 grey images (n, 1024) -> (n, 784) float32 (identity warp)."""
    op = _operator()[:, :(GREY - 2 * MARGIN) ** 2]
    out = np.empty((len(grey), op.shape[1]), np.float32)
    for s in range(0, len(grey), block):
        out[s:s + block] = _unit_rows(grey[s:s + block].astype(np.float32) @ op)
    return out


def grid_vectors(grey: np.ndarray) -> np.ndarray:
    """(n, 1024) grey -> (n, G, 784) unit band-pass vectors of every warp in :data:`WARPS`."""
    flat = grey.reshape(len(grey), -1).astype(np.float32) @ _operator()
    return _unit_rows(flat.reshape(len(grey), len(WARPS), -1))


class Sigs(NamedTuple):
    """Signatures of many images as arrays (see :class:`ppssld.mining.dedup.Signature`)."""
    hash: np.ndarray   # (n, B) uint8
    thumb: np.ndarray  # (n, 256) float32
    grey: np.ndarray   # (n, 1024) uint8
    side: np.ndarray   # (n,) int


class Pairs(NamedTuple):
    """Candidate pairs sorted by query, then ref: query index, ref index, hash distance, thumbnail
    correlation, and whether the hash (else only the thumbnail) made the pair."""
    query: np.ndarray
    ref: np.ndarray
    distance: np.ndarray
    corr: np.ndarray
    by_hash: np.ndarray


class Match(NamedTuple):
    """A confirmed duplicate: query index, ref index, hash distance, pixel scores, aligned band score."""
    query: int
    ref: int
    distance: int
    high: float
    band: float
    grid: float = float("nan")


def confirm(pairs: Pairs, query: Sigs, ref: Sigs, pixel: Callable[[int, int], Tuple[float, float]],
            max_checks: int, pixel_thresholds: Optional[Tuple[float, float]], ranking: str = "grid",
            grid_min: float = DEFAULT_GRID_MIN,
            ref_band: Optional[np.ndarray] = None) -> Tuple[List[Match], Dict[str, int]]:
    """Rank each query's candidates, pixel-check the best, keep the best confirmed one.

    Args:
        pairs: candidates (each gated by hash or thumbnail).
        query, ref: signatures as arrays.
        pixel: ``pixel(q, r) -> (high, band)`` for query q and ref r.
        max_checks: pixel checks per query at most.
        pixel_thresholds: (high-pass, band-pass) minimums; None trusts the ranking stage.
        ranking: ``"grid"`` or ``"thumb"`` (module docstring).
        grid_min: aligned band-pass score a candidate needs (``"grid"`` only).
        ref_band: :func:`band_vectors` of ``ref.grey`` (computed when None).
    Returns:
        (one match per duplicated query, counters as in :func:`ppssld.mining.dedup.find_duplicates`).
    """
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}; choose one of {RANKINGS}")
    stats = {"hash_candidates": 0, "thumb_candidates": 0, "pixel_checks": 0, "rejected_by_alignment": 0,
             "rejected_by_pixel_check": 0}
    matches: List[Match] = []
    if len(pairs.query) == 0:
        return matches, stats
    bounds = np.flatnonzero(np.diff(pairs.query)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(pairs.query)]
    if ranking == "grid" and ref_band is None:
        ref_band = band_vectors(ref.grey)
    qgrid: Dict[int, np.ndarray] = {}
    for n, (s, e) in enumerate(zip(starts, ends)):
        q = int(pairs.query[s])
        refs = pairs.ref[s:e]
        hashed = bool(pairs.by_hash[s:e].any())
        stats["hash_candidates"] += int(hashed)
        stats["thumb_candidates"] += int(not hashed)
        if ranking == "grid":
            if q not in qgrid:  # the next block of queries' warped vectors, one matrix product
                block = pairs.query[starts[n:n + 256]]
                qgrid = dict(zip(block.tolist(), grid_vectors(query.grey[block])))
            score = (qgrid[q] @ ref_band[refs].T).max(axis=0)
            keep = np.flatnonzero(score >= grid_min)
            order = keep[np.lexsort((refs[keep], -score[keep]))][:max_checks]
            if len(order) == 0:
                stats["rejected_by_alignment"] += 1
                continue
        else:
            score = np.full(len(refs), np.nan, np.float32)
            order = np.lexsort((refs, -pairs.corr[s:e]))[:max_checks]
        best: Optional[Match] = None
        for i in order:
            r = int(refs[i])
            if pixel_thresholds is None:
                best = Match(q, r, int(pairs.distance[s + i]), float("nan"), float("nan"), float(score[i]))
                break
            stats["pixel_checks"] += 1
            high, band = pixel(q, r)
            if high >= pixel_thresholds[0] and band >= pixel_thresholds[1]:
                if best is None or band > best.band:
                    best = Match(q, r, int(pairs.distance[s + i]), high, band, float(score[i]))
        if best is None:
            stats["rejected_by_pixel_check"] += 1
        else:
            matches.append(best)
    return matches, stats
