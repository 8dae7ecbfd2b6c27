"""Near-duplicate removal: perceptual hash candidates, vectorised ranking, pixel confirmation.

Three stages, chosen by measurement (``benchmark/mining/mining_hash_measure.py``, results in
``benchmark/results/mining/mining_hash_measure.md``: 2,000 Fashion-MNIST test images as the eval
set, 500 planted copies of 100 of them (exact, resized, JPEG, ~5% crop, brightened), 2,000
distinct training images):

1. **Hash.** ``imagehash.dhash``, 64 bits, Hamming distance <= :data:`DEFAULT_THRESHOLD` (18).
   The largest planted distance was 15 for dhash (crop), against 30 for phash, 12 for whash
   (but 5x slower and 5x more candidates) and 8 for ahash (2.4x more candidates). On
   28-pixel images no hash separates copies from distinct look-alikes: 1,973 of the 2,000
   distinct images have an eval image within 15 bits. The hash is a recall-oriented
   candidate filter, matched exactly and vectorised (XOR + popcount over blocks).
2. **Ranking.** Hash candidates, plus images whose blurred 16x16 thumbnails correlate at
   >= :data:`DEFAULT_THUMB_MIN`, are ranked by their band-pass correlation after the best of
   a few crop-like warps (:mod:`ppssld.mining.dedup.confirm`, one matrix product per block of
   queries); those above its floor, best :data:`DEFAULT_MAX_CHECKS` first, go to stage 3.
   (The thumbnail ranking used before ranked a crop's source up to 50th among Fashion-MNIST
   near-twins: 3 of 100 crops were missed.)
3. **Pixel check.** By default vectorised over the ranked pairs: high-pass and band-pass
   correlations of the query under its best warp with the eval image must reach
   :data:`DEFAULT_PIXEL_THRESHOLDS` (:func:`ppssld.mining.dedup.confirm.aligned_scores`). The check it
   replaced (``check="ecc"``, kept for before/after) aligns each pair by an affine
   ``cv2.findTransformECC`` fit at the smaller image's size (~1.2 ms a pair), thresholds
   :data:`ECC_THRESHOLDS` (lowest planted scores: resized 0.88 / 0.98, crop 0.91 / 0.98).

Stage 1 here is the all-pairs scan (:func:`scan_candidates`), the reference; the pipeline
finds the same pairs with faiss indexes (:mod:`ppssld.mining.dedup.index`) and runs sharded
(:mod:`ppssld.mining.sharded`). Before/after figures: ``benchmark/results/mining/mining_scale.md``.
"""
import logging
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import cv2
import imagehash
import numpy as np
from PIL import Image

from ppssld.mining.dedup import confirm as confirm_mod

logger = logging.getLogger(__name__)

HASHES: Dict[str, Callable] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}
DEFAULT_HASH = "dhash"
DEFAULT_HASH_SIZE = 8
DEFAULT_THRESHOLD = 18
DEFAULT_MAX_CHECKS = 8
DEFAULT_CHECK = "aligned"  # the vectorised pixel check (confirm_mod.aligned_scores); "ecc" is per pair
DEFAULT_PIXEL_THRESHOLDS = confirm_mod.ALIGNED_THRESHOLDS  # (high-pass, band-pass) correlation after alignment
ECC_THRESHOLDS = (0.87, 0.975)  # the same for check="ecc" (pixel_scores)
DEFAULT_THUMB_MIN = 0.95
GREY = 32
THUMB = 16
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


class Signature(NamedTuple):
    """What de-duplication needs of one image (computed once, stored with the scores).

    Attributes:
        hash: packed perceptual hash, uint8 (bits/8,).
        thumb: unit-norm, zero-mean blurred 16x16 grey thumbnail, float32 (256,).
        grey: grey image at 32x32, uint8 (1024,).
        side: the image's shorter side in pixels (the pixel check works at <= this size).
    """
    hash: np.ndarray
    thumb: np.ndarray
    grey: np.ndarray
    side: int


def signature(rgb: np.ndarray, kind: str = DEFAULT_HASH, hash_size: int = DEFAULT_HASH_SIZE) -> Signature:
    """Hash, thumbnail and small grey copy of an HWC uint8 RGB (or HW grey) image."""
    if kind not in HASHES:
        raise ValueError(f"unknown hash {kind!r}; choose one of {sorted(HASHES)}")
    grey = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    bits = HASHES[kind](Image.fromarray(grey), hash_size=hash_size).hash
    small = cv2.resize(grey.astype(np.float32), (GREY, GREY), interpolation=cv2.INTER_AREA)
    thumb = cv2.resize(cv2.GaussianBlur(small, (0, 0), 2.0), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    thumb = thumb.ravel() - thumb.mean()
    thumb = thumb / max(float(np.linalg.norm(thumb)), 1e-6)
    return Signature(np.packbits(np.asarray(bits, dtype=bool).ravel()), thumb.astype(np.float32),
                     np.clip(np.rint(small), 0, 255).astype(np.uint8).ravel(), int(min(grey.shape[:2])))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed hashes ``a`` (n,B) and ``b`` (m,B) -> (n,m) int32."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return _POPCOUNT[np.bitwise_xor(a[:, None, :], b[None, :, :])].sum(axis=-1, dtype=np.int32)


def hash_matches(query: np.ndarray, ref: np.ndarray, threshold: int,
                 block: int = 1 << 23) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (query i, ref j) with Hamming distance <= ``threshold``, blocked in memory.

    Args:
        query: packed hashes (n,B).
        ref: packed hashes (m,B).
        threshold: largest distance that counts.
        block: bound on the bytes one XOR block materialises.
    Returns:
        (query indices, ref indices, distances) sorted by query, then distance, then ref.
    """
    if len(query) == 0 or len(ref) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    rows = max(1, block // max(1, len(ref) * query.shape[1]))
    qs, rs, ds = [], [], []
    for start in range(0, len(query), rows):
        dist = hamming(query[start:start + rows], ref)
        qi, rj = np.nonzero(dist <= threshold)
        qs.append(qi + start)
        rs.append(rj)
        ds.append(dist[qi, rj])
    qi, rj, d = (np.concatenate(qs).astype(np.int64), np.concatenate(rs).astype(np.int64),
                 np.concatenate(ds).astype(np.int32))
    order = np.lexsort((rj, d, qi))
    return qi[order], rj[order], d[order]


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den < 1e-6:
        return 1.0 if float(np.abs(a - b).max()) < 1e-3 else 0.0
    return float((a * b).sum() / den)


def pixel_scores(query: Signature, ref: Signature) -> Tuple[float, float]:
    """(high-pass, band-pass) correlation of ``query`` aligned onto ``ref``.

    Both grey copies are brought to the smaller of the two sizes (<= 32 px); ``query`` is
    aligned to ``ref`` by an affine ECC fit (identity when the fit fails), and a 2-px border
    is ignored. Correlations are invariant to brightness and contrast.
    """
    size = max(8, min(GREY, query.side, ref.side))
    a = query.grey.reshape(GREY, GREY).astype(np.float32)
    b = ref.grey.reshape(GREY, GREY).astype(np.float32)
    if size != GREY:
        a = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, (size, size), interpolation=cv2.INTER_AREA)
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(b, a, warp, cv2.MOTION_AFFINE,
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5), None, 1)
    except cv2.error:
        warp = np.eye(2, 3, dtype=np.float32)
    a = cv2.warpAffine(a, warp, (size, size), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
    m = 2
    high = _ncc((a - cv2.GaussianBlur(a, (0, 0), 1.0))[m:-m, m:-m], (b - cv2.GaussianBlur(b, (0, 0), 1.0))[m:-m, m:-m])

    def band(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), 0.8) - cv2.GaussianBlur(x, (0, 0), 2.5)

    return high, _ncc(band(a)[m:-m, m:-m], band(b)[m:-m, m:-m])


Match = confirm_mod.Match


def as_arrays(sigs: List[Signature]) -> confirm_mod.Sigs:
    """Stack a list of signatures into arrays."""
    return confirm_mod.Sigs(np.stack([s.hash for s in sigs]), np.stack([s.thumb for s in sigs]).astype(np.float32),
                            np.stack([s.grey for s in sigs]), np.array([s.side for s in sigs], np.int32))


def pixel_check(query: confirm_mod.Sigs, ref: confirm_mod.Sigs) -> Callable[[int, int], Tuple[float, float]]:
    """``(q, r) -> pixel_scores`` of query image q against ref image r."""
    def check(q: int, r: int) -> Tuple[float, float]:
        return pixel_scores(Signature(query.hash[q], query.thumb[q], query.grey[q], int(query.side[q])),
                            Signature(ref.hash[r], ref.thumb[r], ref.grey[r], int(ref.side[r])))
    return check


def gate_pairs(query: confirm_mod.Sigs, ref: confirm_mod.Sigs, qi: np.ndarray, rj: np.ndarray, threshold: int,
               thumb_min: Optional[float]) -> confirm_mod.Pairs:
    """Exact hash distance and thumbnail correlation of (qi, rj) pairs; keep those that pass either gate.

    Both the scan and the index end here, so they decide on the same numbers.
    """
    m = max(1, len(ref.hash))
    key = np.unique(qi.astype(np.int64) * m + rj.astype(np.int64))
    qi, rj = key // m, key % m
    dist = _POPCOUNT[np.bitwise_xor(query.hash[qi], ref.hash[rj])].sum(axis=-1, dtype=np.int32)
    corr = np.einsum("ij,ij->i", query.thumb[qi], ref.thumb[rj]).astype(np.float32)
    by_hash = dist <= threshold
    keep = by_hash | (corr >= thumb_min) if thumb_min is not None else by_hash
    return confirm_mod.Pairs(qi[keep], rj[keep], dist[keep], corr[keep], by_hash[keep])


def scan_candidates(query: confirm_mod.Sigs, ref: confirm_mod.Sigs, threshold: int = DEFAULT_THRESHOLD,
                    thumb_min: Optional[float] = DEFAULT_THUMB_MIN, block: int = 1 << 23) -> confirm_mod.Pairs:
    """All-pairs scan (every query against every ref, blocked): the reference the index must equal."""
    if len(query.hash) == 0 or len(ref.hash) == 0:
        return gate_pairs(query, ref, np.zeros(0, np.int64), np.zeros(0, np.int64), threshold, thumb_min)
    rows = max(1, block // max(1, len(ref.hash) * max(query.hash.shape[1], 8)))
    qs, rs = [], []
    for start in range(0, len(query.hash), rows):
        hit = hamming(query.hash[start:start + rows], ref.hash) <= threshold
        if thumb_min is not None:  # a little slack: gate_pairs decides on the exact per-pair value
            hit |= query.thumb[start:start + rows] @ ref.thumb.T >= thumb_min - 1e-4
        qi, rj = np.nonzero(hit)
        qs.append(qi + start)
        rs.append(rj)
    return gate_pairs(query, ref, np.concatenate(qs), np.concatenate(rs), threshold, thumb_min)


def find_duplicates(query: List[Signature], ref: List[Signature], threshold: int = DEFAULT_THRESHOLD,
                    max_checks: int = DEFAULT_MAX_CHECKS,
                    pixel_thresholds: Optional[Tuple[float, float]] = DEFAULT_PIXEL_THRESHOLDS,
                    thumb_min: Optional[float] = DEFAULT_THUMB_MIN, ranking: str = "grid",
                    grid_min: float = confirm_mod.DEFAULT_GRID_MIN,
                    check: str = DEFAULT_CHECK) -> Tuple[List[Match], Dict[str, int]]:
    """Confirmed near-duplicates of ``query`` images among ``ref`` images, by the all-pairs scan.

    The pipeline uses :class:`ppssld.mining.dedup.index.RefIndex` instead (same decisions, tested).

    Args:
        query: signatures of the pool images.
        ref: signatures of the evaluation (or training) images.
        threshold: hash Hamming threshold (stage 1).
        max_checks: candidates per query that get the pixel check, best ranked first.
        pixel_thresholds: (high-pass, band-pass) minimums; None trusts the candidate stage alone.
        thumb_min: thumbnail correlation that makes a candidate without a hash match (crops).
        ranking, grid_min, check: see :func:`ppssld.mining.dedup.confirm.confirm` (``check="ecc"`` wants
            ``pixel_thresholds=ECC_THRESHOLDS``).
    Returns:
        (matches, one per duplicated query; counters: ``hash_candidates`` queries with a hash
        match, ``thumb_candidates`` queries with only a thumbnail match, ``pixel_checks`` run,
        ``rejected_by_alignment`` queries whose candidates all scored below ``grid_min``,
        ``rejected_by_pixel_check`` candidate queries kept because every check failed).
    """
    if not query or not ref:
        return confirm_mod.confirm(confirm_mod.Pairs(*[np.zeros(0, np.int64)] * 5), None, None, None, max_checks,
                                   pixel_thresholds, ranking, grid_min, check=check)
    q, r = as_arrays(query), as_arrays(ref)
    pairs = scan_candidates(q, r, threshold, thumb_min)
    return confirm_mod.confirm(pairs, q, r, pixel_check(q, r), max_checks, pixel_thresholds, ranking, grid_min,
                               check=check)


def feature_matches(query: np.ndarray, ref: np.ndarray, threshold: float,
                    block: int = 4096) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs whose feature cosine similarity is >= ``threshold``: (query i, ref j, cosine).

    For each query only its most similar ref is returned.
    """
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    q, r = unit(query), unit(ref)
    qs, rs, ss = [], [], []
    for start in range(0, len(q), block):
        sim = q[start:start + block] @ r.T
        j = sim.argmax(axis=1)
        s = sim[np.arange(len(j)), j]
        keep = np.flatnonzero(s >= threshold)
        qs.append(keep + start)
        rs.append(j[keep])
        ss.append(s[keep])
    if not qs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.concatenate(qs).astype(np.int64), np.concatenate(rs).astype(np.int64),
            np.concatenate(ss).astype(np.float32))
