"""De-duplication signatures of many images at once, equal bit for bit to :func:`ppssld.mining.dedup.signature`.

The per-image function spends most of its ~0.1 ms per 28-px image in Python and small numpy calls
(``imagehash`` builds a PIL image, converts, resizes; mean, norm, clip, packbits one image at a
time). Here, for a stack of grey images of one shape:

- the dHash's PIL LANCZOS resize is reproduced exactly: Pillow's 8-bit resampling is integer
  arithmetic on fixed-point coefficients (22 fractional bits, computed in double precision by
  the same formula, :func:`_pil_coefficients`), horizontal pass then vertical, each rounded and
  clipped to uint8. Those sums are exact in float64 (integers below 2^53), so one matrix product
  per pass gives Pillow's bytes;
- the float32 thumbnail pipeline stays OpenCV's (resize, blur, resize per image: the same calls,
  so the same bits), and its normalisation, the grey copy and the bit packing are done on the stack.

Other hash kinds than dHash fall back to the per-image function. Tested against it
(``tests/test_mining_signatures.py``) on Fashion-MNIST-like images, random images and odd sizes.
"""
import functools
import logging
import math
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from ppssld.mining.dedup import near_duplicates as dedup

logger = logging.getLogger(__name__)

_PRECISION_BITS = 22  # Pillow's 8-bit resampling: 32 - 8 - 2
_LANCZOS_SUPPORT = 3.0


def _lanczos(x: float) -> float:
    def sinc(v: float) -> float:
        if v == 0.0:
            return 1.0
        v = v * math.pi
        return math.sin(v) / v
    return sinc(x) * sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


@functools.lru_cache(maxsize=64)
def _pil_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """(in_size, out_size) float64 matrix of Pillow's fixed-point LANCZOS coefficients for one axis."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    mat = np.zeros((in_size, out_size), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = 0.0
        for w in weights:
            total += w
        for x, w in enumerate(weights):
            k = w / total if total != 0.0 else w
            fixed = int(-0.5 + k * (1 << _PRECISION_BITS)) if k < 0 else int(0.5 + k * (1 << _PRECISION_BITS))
            mat[x + xmin, xx] = fixed
    return mat


def _pil_pass(x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """One Pillow 8-bit resampling pass over the last axis of float64 integer pixels."""
    acc = (x @ coeffs).astype(np.int64) + (1 << (_PRECISION_BITS - 1))
    return np.minimum(np.maximum(acc >> _PRECISION_BITS, 0), 255).astype(np.float64)  # Pillow's clip8


def pil_lanczos(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    """``Image.fromarray(g).resize((width, height), LANCZOS)`` of every grey image of an (N, H, W) uint8 stack."""
    n, h, w = grey.shape
    out = grey.astype(np.float64)
    if w != width:  # Pillow skips a pass whose size does not change
        out = _pil_pass(out, _pil_coefficients(w, width))
    if h != height:
        out = _pil_pass(out.transpose(0, 2, 1), _pil_coefficients(h, height)).transpose(0, 2, 1)
    return out.astype(np.uint8).reshape(n, height, width)


def dhash_bits(grey: np.ndarray, hash_size: int = dedup.DEFAULT_HASH_SIZE) -> np.ndarray:
    """``imagehash.dhash`` bits of an (N, H, W) uint8 stack: (N, hash_size ** 2) bool."""
    pixels = pil_lanczos(grey, hash_size + 1, hash_size)
    return (pixels[:, :, 1:] > pixels[:, :, :-1]).reshape(len(grey), -1)


def _same_shape(grey: np.ndarray, kind: str, hash_size: int) -> Dict[str, np.ndarray]:
    """Signature arrays of an (N, H, W) uint8 stack."""
    n, h, w = grey.shape
    if kind == "dhash":
        packed = np.packbits(dhash_bits(grey, hash_size), axis=1)
    else:
        packed = np.stack([dedup.signature(g, kind, hash_size).hash for g in grey])
    grey_f = grey.astype(np.float32)
    small = np.empty((n, dedup.GREY, dedup.GREY), np.float32)
    thumb = np.empty((n, dedup.THUMB, dedup.THUMB), np.float32)
    size, side, area = (dedup.GREY, dedup.GREY), (dedup.THUMB, dedup.THUMB), cv2.INTER_AREA
    for i in range(n):  # OpenCV's float pipeline, call for call as dedup.signature (its bits depend on the call)
        small[i] = cv2.resize(grey_f[i], size, interpolation=area)
        thumb[i] = cv2.resize(cv2.GaussianBlur(small[i], (0, 0), 2.0), side, interpolation=area)
    flat = thumb.reshape(n, -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.array([row.dot(row) for row in flat], np.float32))  # BLAS dot per row, as np.linalg.norm
    flat = flat / np.maximum(norm, np.float32(1e-6))[:, None]
    np.rint(small, out=small)
    np.minimum(np.maximum(small, 0, out=small), 255, out=small)  # np.clip, without its slow path
    return {"hash": packed, "thumb": flat.astype(np.float32), "grey": small.astype(np.uint8).reshape(n, -1),
            "side": np.full(n, min(h, w), np.int32)}


def signature_arrays(greys: Sequence[np.ndarray], kind: str = dedup.DEFAULT_HASH,
                     hash_size: int = dedup.DEFAULT_HASH_SIZE) -> Dict[str, np.ndarray]:
    """``hash`` (N, B) uint8, ``thumb`` (N, 256) float32, ``grey`` (N, 1024) uint8, ``side`` (N,) int32 of
    HW uint8 grey images (any sizes), row i equal to :func:`dedup.signature` of image i."""
    if kind not in dedup.HASHES:
        raise ValueError(f"unknown hash {kind!r}; choose one of {sorted(dedup.HASHES)}")
    n = len(greys)
    out = {"hash": np.zeros((n, hash_size * hash_size // 8), np.uint8),
           "thumb": np.zeros((n, dedup.THUMB ** 2), np.float32),
           "grey": np.zeros((n, dedup.GREY ** 2), np.uint8), "side": np.zeros(n, np.int32)}
    by_shape: Dict[Tuple[int, ...], List[int]] = {}
    for i, g in enumerate(greys):
        by_shape.setdefault(g.shape, []).append(i)
    for rows in by_shape.values():
        part = _same_shape(np.stack([greys[i] for i in rows]), kind, hash_size)
        for key, value in part.items():
            out[key][rows] = value
    return out
