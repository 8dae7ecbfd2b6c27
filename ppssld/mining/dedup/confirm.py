"""Confirmation of near-duplicate candidates: aligned band-pass ranking, then the pixel check.

Candidate pairs (from the scan in :mod:`ppssld.mining.dedup.near_duplicates` or the index in
:mod:`ppssld.mining.dedup.index`) are grouped by query. Two ranking policies choose which
candidates get the pixel check (:func:`aligned_scores`, vectorised over the ranked pairs; the
per-pair ``cv2.findTransformECC`` check it replaced stays as ``check="ecc"``):

- ``"grid"`` (default): every candidate is scored, vectorised over the candidate batch, by the
  best band-pass correlation of the query under :data:`WARPS` (identity, and a 4% zoom
  anchored at 9 positions: the slight crops the wild makes) with the reference. Warping and
  band-pass filtering are linear, so they are one precomputed matrix (1024 -> G x 784) and
  the scores are one matrix product per query. Candidates below :data:`DEFAULT_GRID_MIN` are
  dropped; the best :data:`~ppssld.mining.dedup.DEFAULT_MAX_CHECKS` go to the pixel check.
  Measured on Fashion-MNIST (``benchmark/results/mining/mining_scale.md``): every planted source
  ranks first (the thumbnail ranked a crop's source up to 50th, which is how 3 of 100 crops
  were missed), the lowest planted score is 0.974, and 88% of the pixel checks are skipped.
- ``"thumb"``: today's policy before this module (rank by thumbnail correlation, no floor),
  kept to measure before/after.
"""
import functools
import logging
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

logger = logging.getLogger(__name__)

GREY = 32
MARGIN = 2
DEFAULT_GRID_MIN = 0.93
RANKINGS = ("grid", "thumb")
CHECKS = ("aligned", "ecc")
# (high-pass, band-pass) minimums of the "aligned" check, at the best warp of WARPS. Calibrated on the
# Fashion-MNIST planted set of benchmark/mining/mining_scale.py (500 copies of 100 of 2,000 test images, 2,000 distinct
# training images): lowest planted own-source scores 0.507 / 0.963; at these minimums 500/500 copies are caught
# and 186 distinct images removed, where the ECC check (0.87 / 0.975) removed 212.
ALIGNED_THRESHOLDS = (0.45, 0.955)


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


def _high(x: np.ndarray) -> np.ndarray:
    return x - cv2.GaussianBlur(x, (0, 0), 1.0)


@functools.lru_cache(maxsize=2)
def _operator(kind: str = "band") -> np.ndarray:
    """(1024, G*D) float32: grey 32x32 -> band-pass (or high-pass) of each warp, border of MARGIN dropped."""
    filt = _band if kind == "band" else _high
    side = GREY - 2 * MARGIN
    cols = np.zeros((GREY * GREY, len(WARPS), side * side), np.float32)
    for p in range(GREY * GREY):
        e = np.zeros((GREY, GREY), np.float32)
        e.flat[p] = 1.0
        for g, w in enumerate(WARPS):
            img = cv2.warpAffine(e, w, (GREY, GREY), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            cols[p, g] = filt(img)[MARGIN:-MARGIN, MARGIN:-MARGIN].ravel()
    return cols.reshape(GREY * GREY, -1)


def aligned_scores(query_grey: np.ndarray, ref_grey: np.ndarray, qi: np.ndarray, rj: np.ndarray,
                   band: Optional[np.ndarray] = None, warp: Optional[np.ndarray] = None,
                   band_min: float = -np.inf) -> Tuple[np.ndarray, np.ndarray]:
    """The "aligned" pixel check of pairs, vectorised: (high-pass, band-pass) correlation of the query
    under its best warp of :data:`WARPS` (best by band-pass) with the reference, both (n,) float32.

    ``band`` and ``warp`` (from :func:`grid_scores`) skip the band-pass part; the high-pass one is
    computed only for pairs whose band-pass score reaches ``band_min`` (NaN for the others).
    """
    n, d = len(qi), (GREY - 2 * MARGIN) ** 2
    high = np.full(n, np.nan, np.float32)
    if n == 0:
        return high, np.zeros(0, np.float32)
    r = ref_grey[rj].astype(np.float32)
    q = query_grey[qi].astype(np.float32)
    if band is None or warp is None:  # the ranking's own score: best warp of the query against the reference
        pairs = np.arange(n)
        band, warp = grid_scores(grid_vectors(query_grey[qi]), band_vectors(ref_grey[rj]), pairs, pairs,
                                 with_warp=True)
    band = np.asarray(band, np.float32)
    oh = _operator("high").reshape(GREY * GREY, len(WARPS), d)
    need = np.flatnonzero(band >= band_min)
    rh = _unit_rows(r[need] @ oh[:, 0])
    for g in np.unique(warp[need]):
        rows = np.flatnonzero(warp[need] == g)
        high[need[rows]] = np.einsum("nd,nd->n", _unit_rows(q[need[rows]] @ oh[:, g]), rh[rows])
    return high, band


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


def grid_scores(qgrid: np.ndarray, ref_band: np.ndarray, qi: np.ndarray, rj: np.ndarray,
                block: int = 2048, with_warp: bool = False) -> Any:
    """Exact aligned band-pass score of pairs: max over warps of ``qgrid[qi] . ref_band[rj]`` (float32);
    with ``with_warp`` also the best warp of each pair (its index in :data:`WARPS`)."""
    out = np.empty(len(qi), np.float32)
    warp = np.empty(len(qi), np.int64)
    for s in range(0, len(qi), block):
        per_warp = np.einsum("pgd,pd->pg", qgrid[qi[s:s + block]], ref_band[rj[s:s + block]])
        warp[s:s + block] = per_warp.argmax(axis=1)
        out[s:s + block] = per_warp[np.arange(len(per_warp)), warp[s:s + block]]
    return (out, warp) if with_warp else out


def query_grids(grey: np.ndarray, queries: np.ndarray, block: int = 256) -> np.ndarray:
    """(len(grey), G, 784) grid vectors, filled for ``queries`` only (zeros elsewhere)."""
    out = np.zeros((len(grey), len(WARPS), (GREY - 2 * MARGIN) ** 2), np.float32)
    for s in range(0, len(queries), block):
        rows = queries[s:s + block]
        out[rows] = grid_vectors(grey[rows])
    return out


def rank_candidates(pairs: Pairs, query: Sigs, ref: Sigs, max_checks: int, ranking: str, grid_min: float,
                    ref_band: Optional[np.ndarray], score: Optional[np.ndarray],
                    warp: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], int]:
    """Each query's candidates best first, cut to ``max_checks`` per query (see :func:`confirm`).

    Returns:
        (indices into ``pairs`` in ranked order, every pair's grid score (NaN for ``"thumb"``), their
        warps (``"grid"``), how many queries kept a candidate after the ranking).
    """
    qi, rj = pairs.query.astype(np.int64), pairs.ref.astype(np.int64)
    if ranking == "grid":
        if score is None:
            if ref_band is None:
                ref_band = band_vectors(ref.grey)
            score, warp = grid_scores(query_grids(query.grey, np.unique(qi)), ref_band, qi, rj, with_warp=True)
        keep = np.flatnonzero(score >= grid_min)
        order = keep[np.lexsort((rj[keep], -score[keep], qi[keep]))]
    else:
        score = np.full(len(qi), np.nan, np.float32)
        order = np.lexsort((rj, -pairs.corr, qi))
    # the first max_checks of each query's ranked candidates
    oq = qi[order]
    first = np.r_[True, oq[1:] != oq[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(oq)), 0))
    return order[np.arange(len(oq)) - group_start < max_checks], score, warp, int(first.sum())


def confirm(pairs: Pairs, query: Sigs, ref: Sigs, pixel: Callable[[int, int], Tuple[float, float]],
            max_checks: int, pixel_thresholds: Optional[Tuple[float, float]], ranking: str = "grid",
            grid_min: float = DEFAULT_GRID_MIN, ref_band: Optional[np.ndarray] = None,
            score: Optional[np.ndarray] = None,
            candidate_queries: Optional[Tuple[np.ndarray, np.ndarray]] = None,
            check: str = "aligned", warp: Optional[np.ndarray] = None) -> Tuple[List[Match], Dict[str, int]]:
    """Rank each query's candidates, pixel-check them best first, keep the first confirmed one.

    Ranking and selection are vectorised over the whole candidate batch. With ``check="aligned"``
    (default) the pixel check is too (:func:`aligned_scores`, one batched operation over every
    ranked pair); ``check="ecc"`` runs ``pixel`` one pair at a time and stops a query's checks once
    one confirms (the removal is decided).

    Args:
        pairs: candidates (each gated by hash or thumbnail), sorted by query then ref.
        query, ref: signatures as arrays.
        pixel: ``pixel(q, r) -> (high, band)`` for query q and ref r.
        max_checks: pixel checks per query at most.
        pixel_thresholds: (high-pass, band-pass) minimums; None trusts the ranking stage.
            :data:`ALIGNED_THRESHOLDS` for "aligned", ``dedup.ECC_THRESHOLDS`` for "ecc".
        ranking: ``"grid"`` or ``"thumb"`` (module docstring).
        grid_min: aligned band-pass score a candidate needs (``"grid"`` only).
        ref_band: :func:`band_vectors` of ``ref.grey`` (computed when None).
        score: the pairs' grid scores when already computed (``"grid"`` only).
        candidate_queries: (queries with a hash candidate, queries with only thumbnail candidates)
            when ``pairs`` were pre-filtered (the counters then come from these, not from ``pairs``).
        check: ``"aligned"`` (vectorised) or ``"ecc"`` (``pixel``, per pair, kept for before/after).
        warp: the pairs' best warps, with ``score`` (:func:`grid_scores` ``with_warp``).
    Returns:
        (one match per duplicated query, counters as in :func:`ppssld.mining.dedup.find_duplicates`).
    """
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}; choose one of {RANKINGS}")
    if check not in CHECKS:
        raise ValueError(f"unknown pixel check {check!r}; choose one of {CHECKS}")
    if candidate_queries is None:
        hashed = np.unique(pairs.query[pairs.by_hash.astype(bool)])
        candidate_queries = (hashed, np.setdiff1d(np.unique(pairs.query), hashed))
    stats = {"hash_candidates": int(len(candidate_queries[0])), "thumb_candidates": int(len(candidate_queries[1])),
             "pixel_checks": 0, "rejected_by_alignment": 0, "rejected_by_pixel_check": 0}
    matches: List[Match] = []
    n_candidates = stats["hash_candidates"] + stats["thumb_candidates"]
    if len(pairs.query) == 0:
        stats["rejected_by_alignment"] = n_candidates if ranking == "grid" else 0
        return matches, stats
    qi, rj = pairs.query.astype(np.int64), pairs.ref.astype(np.int64)
    order, score, warp, ranked_queries = rank_candidates(pairs, query, ref, max_checks, ranking, grid_min, ref_band,
                                                         score, warp)
    if ranking == "grid":
        stats["rejected_by_alignment"] = n_candidates - ranked_queries
    best: Dict[int, Match] = {}
    if check == "aligned" and pixel_thresholds is not None:
        known = ranking == "grid" and warp is not None  # the ranking's band-pass score is the check's
        high, band = aligned_scores(query.grey, ref.grey, qi[order], rj[order], score[order] if known else None,
                                    warp[order] if known else None, pixel_thresholds[1])
        stats["pixel_checks"] = int(len(order))
        ok = np.flatnonzero((high >= pixel_thresholds[0]) & (band >= pixel_thresholds[1]))
        for k in ok.tolist():  # ranked order: a query's first confirmed candidate is its match
            i = int(order[k])
            q = int(qi[i])
            if q not in best:
                best[q] = Match(q, int(rj[i]), int(pairs.distance[i]), float(high[k]), float(band[k]),
                                float(score[i]))
        order_iter: List[int] = []
    else:
        order_iter = order.tolist()
    for i in order_iter:
        q, r = int(qi[i]), int(rj[i])
        if pixel_thresholds is None:
            best.setdefault(q, Match(q, r, int(pairs.distance[i]), float("nan"), float("nan"), float(score[i])))
            continue
        if q in best:  # decided: its best-ranked confirmed candidate is the match, no more checks
            continue
        stats["pixel_checks"] += 1
        high, band = pixel(q, r)
        if high >= pixel_thresholds[0] and band >= pixel_thresholds[1]:
            best[q] = Match(q, r, int(pairs.distance[i]), high, band, float(score[i]))
    checked = np.unique(qi[order])
    stats["rejected_by_pixel_check"] = int(len(checked)) - len(best) if pixel_thresholds is not None else 0
    return [best[q] for q in sorted(best)], stats
