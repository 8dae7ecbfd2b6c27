"""Near-duplicate removal: perceptual hash, vectorised Hamming matching, pixel confirmation.

Choice of hash and threshold (measured, see ``benchmark/mining_hash_measure.py`` and
``benchmark/results/mining_hash_measure.md``): on Fashion-MNIST with planted duplicates
(exact copy, resized, JPEG re-encoded, slightly cropped, brightened) the default
``phash`` with 64 bits (``hash_size=8``) finds every planted copy within Hamming distance
:data:`DEFAULT_THRESHOLD`, while many *distinct* same-class images (plain T-shirts, bags,
sandals) also fall within that distance. A hash match alone therefore over-removes; every
hash match is confirmed by :func:`pixel_similarity` (best normalised cross-correlation
over small crop/shift alignments of 32x32 grey images) against
:data:`DEFAULT_PIXEL_THRESHOLD`. Both numbers are in the measurement results file.

Hashes are stored packed (``uint8`` rows of ``bits/8`` bytes); matching is exact and
vectorised (XOR + popcount lookup over blocks), never a Python loop over pairs.
"""
import io
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import imagehash
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

HASHES: Dict[str, Callable] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}
DEFAULT_HASH = "phash"
DEFAULT_HASH_SIZE = 8
DEFAULT_THRESHOLD = 12
DEFAULT_PIXEL_THRESHOLD = 0.95
PIXEL_SIZE = 32
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes to a PIL image (fully loaded).

    Raises:
        ValueError: the bytes are not a readable image.
    """
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
    return img


def hash_bits(kind: str = DEFAULT_HASH, hash_size: int = DEFAULT_HASH_SIZE) -> int:
    """Number of bits of a hash kind at ``hash_size`` (always ``hash_size**2``)."""
    if kind not in HASHES:
        raise ValueError(f"unknown hash {kind!r}; choose one of {sorted(HASHES)}")
    return hash_size * hash_size


def image_hash(img: Image.Image, kind: str = DEFAULT_HASH, hash_size: int = DEFAULT_HASH_SIZE) -> np.ndarray:
    """Perceptual hash of an image, packed.

    Args:
        img: PIL image (any mode; hashed in grey).
        kind: one of :data:`HASHES`.
        hash_size: side of the hash grid (bits = hash_size**2).
    Returns:
        ``uint8`` array of ``hash_size**2 / 8`` bytes.
    """
    hash_bits(kind, hash_size)
    bits = HASHES[kind](img.convert("L"), hash_size=hash_size).hash
    return np.packbits(np.asarray(bits, dtype=bool).ravel())


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed hashes ``a`` (n,B) and ``b`` (m,B) -> (n,m) int."""
    a = np.atleast_2d(a)
    b = np.atleast_2d(b)
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return _POPCOUNT[x].sum(axis=-1, dtype=np.int32)


def hash_matches(query: np.ndarray, ref: np.ndarray, threshold: int,
                 block: int = 1 << 22) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (query i, ref j) with Hamming distance <= ``threshold``.

    Blocked so that at most ``block`` pair-bytes are materialised at once.

    Args:
        query: packed hashes (n,B).
        ref: packed hashes (m,B).
        threshold: largest distance that counts as a match.
        block: memory bound in bytes for one XOR block.
    Returns:
        (query indices, ref indices, distances), sorted by query then distance.
    """
    qi_all, rj_all, d_all = [], [], []
    n, m = len(query), len(ref)
    if n == 0 or m == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.int32)
    nbytes = query.shape[1]
    rows = max(1, block // max(1, m * nbytes))
    for start in range(0, n, rows):
        dist = hamming(query[start:start + rows], ref)
        qi, rj = np.nonzero(dist <= threshold)
        qi_all.append(qi + start)
        rj_all.append(rj)
        d_all.append(dist[qi, rj])
    qi = np.concatenate(qi_all).astype(np.int64)
    rj = np.concatenate(rj_all).astype(np.int64)
    d = np.concatenate(d_all).astype(np.int32)
    order = np.lexsort((rj, d, qi))
    return qi[order], rj[order], d[order]


def nearest(query: np.ndarray, ref: np.ndarray, block: int = 1 << 22) -> Tuple[np.ndarray, np.ndarray]:
    """For each query hash, the nearest ref hash: (ref index, distance) arrays."""
    m, nbytes = len(ref), query.shape[1]
    rows = max(1, block // max(1, m * nbytes))
    idx, dist = [], []
    for start in range(0, len(query), rows):
        d = hamming(query[start:start + rows], ref)
        j = d.argmin(axis=1)
        idx.append(j)
        dist.append(d[np.arange(len(j)), j])
    return np.concatenate(idx), np.concatenate(dist)


def grey_array(img: Image.Image, size: int = PIXEL_SIZE) -> np.ndarray:
    """Grey float32 ``size`` x ``size`` array for the pixel check."""
    arr = np.asarray(img.convert("L"), dtype=np.float32)
    return cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den < 1e-6:  # flat images: equal only if both flat and same level
        return 1.0 if den == 0 and np.allclose(a, b) else 0.0
    return float((a * b).sum() / den)


def _views(arr: np.ndarray, max_crop: int) -> List[np.ndarray]:
    """The image and its crops (each side 0..max_crop px, 32-px scale) resized back."""
    size = arr.shape[0]
    views = [arr]
    steps = sorted({0, max_crop // 2, max_crop}) if max_crop > 0 else [0]
    for top in steps:
        for left in steps:
            for bottom in steps:
                for right in steps:
                    if top == left == bottom == right == 0:
                        continue
                    crop = arr[top:size - bottom, left:size - right]
                    views.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR))
    return views


def pixel_similarity(a: Image.Image, b: Image.Image, max_crop: int = 4) -> float:
    """Best normalised cross-correlation of two images over small crop alignments.

    Both are turned grey and 32x32; each is also cropped by up to ``max_crop`` px per side
    (so a slightly cropped copy aligns with its source) and the highest correlation of
    (crop of one, the other whole) is returned. Invariant to brightness and contrast.

    Args:
        a: first image.
        b: second image.
        max_crop: largest crop per side, in pixels at 32x32.
    Returns:
        Similarity in [-1, 1]; 1 means identical up to gain and offset.
    """
    ga, gb = grey_array(a), grey_array(b)
    best = _ncc(ga, gb)
    if best >= 0.999:
        return best
    for view in _views(ga, max_crop)[1:]:
        best = max(best, _ncc(view, gb))
    for view in _views(gb, max_crop)[1:]:
        best = max(best, _ncc(ga, view))
    return best


def cosine_matches(query: np.ndarray, ref: np.ndarray, threshold: float,
                   block: int = 4096) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs with cosine similarity of features >= ``threshold``: (query i, ref j, cosine)."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    q, r = unit(query), unit(ref)
    qi_all, rj_all, s_all = [], [], []
    for start in range(0, len(q), block):
        sim = q[start:start + block] @ r.T
        qi, rj = np.nonzero(sim >= threshold)
        qi_all.append(qi + start)
        rj_all.append(rj)
        s_all.append(sim[qi, rj])
    if not qi_all:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.concatenate(qi_all).astype(np.int64), np.concatenate(rj_all).astype(np.int64),
            np.concatenate(s_all).astype(np.float32))


def confirm_pairs(pairs: Sequence[Tuple[int, int]], load_query: Callable[[int], Optional[Image.Image]],
                  load_ref: Callable[[int], Optional[Image.Image]],
                  pixel_threshold: Optional[float] = DEFAULT_PIXEL_THRESHOLD) -> Dict[int, Tuple[int, float]]:
    """Confirm candidate pairs with the pixel check; the best confirmed ref per query.

    Args:
        pairs: (query index, ref index) candidates, any order.
        load_query: index -> PIL image (None when unreadable: the pair is not confirmed).
        load_ref: index -> PIL image.
        pixel_threshold: minimum :func:`pixel_similarity`; None confirms every pair (similarity
            is still computed and reported).
    Returns:
        query index -> (ref index, similarity) for confirmed queries.
    """
    confirmed: Dict[int, Tuple[int, float]] = {}
    for qi, rj in pairs:
        a, b = load_query(qi), load_ref(rj)
        if a is None or b is None:
            continue
        sim = pixel_similarity(a, b)
        if pixel_threshold is None or sim >= pixel_threshold:
            if qi not in confirmed or sim > confirmed[qi][1]:
                confirmed[qi] = (rj, sim)
    return confirmed
