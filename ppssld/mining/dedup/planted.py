"""Planted near-duplicates for testing and measuring de-duplication.

Five kinds of copies an image collection acquires in the wild: the exact file, a resized
copy (x0.75, x1.5 or x2), a JPEG re-encode (quality 65-90), a slight crop (~5% per axis, at
least 1 px, split at random between the two sides) and a brightened copy (x1.1-1.3).
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
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(65, 91)))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def _cropped(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    cut_w, cut_h = max(1, round(0.05 * w)), max(1, round(0.05 * h))  # ~5% per axis (1 px of 28)
    left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
    return img.crop((left, top, w - (cut_w - left), h - (cut_h - top)))


def _brightened(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(float(rng.uniform(1.1, 1.3)))


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


def make_planted_set(out: str, eval_images: np.ndarray, eval_labels: np.ndarray, pool_images: np.ndarray,
                     planted_per_kind: int, seed: int = 0, corrupt: int = 0) -> Dict[str, object]:
    """Write a small mining fixture: eval images, a pool of distinct images plus planted copies.

    Args:
        out: folder; images go to ``out/images/{eval,pool}``, lists to ``out/*.txt``.
        eval_images, eval_labels: the evaluation set (grey HxW uint8 arrays).
        pool_images: distinct pool images.
        planted_per_kind: copies of each kind, made from the first eval images.
        seed: randomness of the copies.
        corrupt: also add this many unreadable pool files.
    Returns:
        ``{"planted": {pool_path: eval_path}, "distinct": [pool paths], "corrupt": [pool paths]}``.
    """
    import os

    from ppssld.utils.io import atomic_write_text

    rng = np.random.default_rng(seed)
    for sub in ("eval", "pool"):
        os.makedirs(os.path.join(out, "images", sub), exist_ok=True)

    def save(rel: str, data: bytes) -> None:
        with open(os.path.join(out, "images", rel), "wb") as handle:
            handle.write(data)

    eval_paths = []
    for i, arr in enumerate(eval_images):
        eval_paths.append(f"eval/{i:05d}.png")
        save(eval_paths[-1], encode_png(Image.fromarray(arr)))
    distinct = []
    for i, arr in enumerate(pool_images):
        distinct.append(f"pool/d{i:05d}.png")
        save(distinct[-1], encode_png(Image.fromarray(arr)))
    planted = {}
    for kind in VARIANTS:
        for j in range(planted_per_kind):
            rel = f"pool/p_{kind}_{j:04d}.png"
            save(rel, encode_png(plant(Image.fromarray(eval_images[j]), kind, rng)))
            planted[rel] = eval_paths[j]
    bad = []
    for j in range(corrupt):
        bad.append(f"pool/bad_{j:03d}.png")
        save(bad[-1], b"" if j % 2 == 0 else b"\x89PNG\r\n\x1a\n not really a png")
    pool_rows = sorted(distinct + list(planted) + bad)
    atomic_write_text(os.path.join(out, "pool_list.txt"), "".join(p + "\n" for p in pool_rows))
    atomic_write_text(os.path.join(out, "val_list.txt"),
                      "".join(f"{p} {int(y)}\n" for p, y in zip(eval_paths, eval_labels)))
    return {"planted": planted, "distinct": distinct, "corrupt": bad}
