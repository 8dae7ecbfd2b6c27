"""Planted near-duplicates for testing and measuring de-duplication.

Five kinds of copies an image collection acquires in the wild: the exact file, a resized
copy, a JPEG re-encode, a slight crop and a brightened copy.
"""
import io
import logging
from typing import Callable, Dict

import numpy as np
from PIL import Image, ImageEnhance

logger = logging.getLogger(__name__)


def _exact(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.copy()


def _resized(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = float(rng.choice([0.75, 1.5, 2.0]))
    w, h = img.size
    return img.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.BILINEAR)


def _jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(60, 86)))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def _cropped(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    frac = max(1, round(0.07 * min(w, h)))  # up to ~7% per side (2 px of 28)
    left, top, right, bottom = (int(v) for v in rng.integers(0, frac + 1, size=4))
    if left + top + right + bottom == 0:
        left = 1
    return img.crop((left, top, w - right, h - bottom))


def _brightened(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(float(rng.uniform(1.2, 1.5)))


VARIANTS: Dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "exact": _exact,
    "resized": _resized,
    "jpeg": _jpeg,
    "cropped": _cropped,
    "brightened": _brightened,
}


def plant(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate of ``img`` of the given ``kind`` (a key of :data:`VARIANTS`)."""
    if kind not in VARIANTS:
        raise ValueError(f"unknown duplicate kind {kind!r}; choose one of {sorted(VARIANTS)}")
    return VARIANTS[kind](img, rng)


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of ``img`` (JPEG-planted images keep their JPEG artefacts)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
