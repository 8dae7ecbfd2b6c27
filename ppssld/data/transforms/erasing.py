"""Occlusion ops with PaddleClas names and keys: RandomErasing, Cutout, HideAndSeek, GridMask.

They work on HWC or CHW arrays, uint8 or float (PaddleClas puts them after NormalizeImage), and
draw every random number from the sample's rng, so augmentation stays a function of
(seed, epoch, index). No paddle import (the deploy path shares the transform modules).
"""
import logging
import math
import random
from typing import Any, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ppssld.data.transforms.core import ANY, CHW, Op, parse_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)


def _hw(img: np.ndarray, layout: str) -> Tuple[int, int]:
    return (img.shape[1], img.shape[2]) if layout == CHW else (img.shape[0], img.shape[1])


def _fill(img: np.ndarray, layout: str, top: int, left: int, h: int, w: int, value: Any) -> None:
    """Write ``value`` (scalar, per-channel [C] or per-pixel [h, w, C]) into a box of ``img`` in place."""
    value = np.asarray(value, dtype=np.float64)
    if np.issubdtype(img.dtype, np.integer):
        value = np.clip(np.round(value), 0, 255)
    if layout == CHW:
        value = value.transpose(2, 0, 1) if value.ndim == 3 else value.reshape(-1, 1, 1) if value.ndim == 1 else value
        img[:, top:top + h, left:left + w] = value.astype(img.dtype)
    else:
        img[top:top + h, left:left + w] = value.astype(img.dtype)


def _rng_numpy(rng: Any) -> np.random.Generator:
    return np.random.default_rng(rng.getrandbits(64))


@TRANSFORMS.register(name="RandomErasing")
class RandomErasing(Op):
    """Random Erasing (Zhong et al. 2020): with probability ``EPSILON`` fill one random rectangle.

    The rectangle's area is ``uniform(sl, sh)`` of the image and its aspect ``uniform(r1, 1/r1)``
    (log-uniform with ``use_log_aspect``); up to ``attempt`` draws until it fits. ``mode``: ``const``
    fills ``mean`` per channel, ``rand`` one N(0, 1) value per channel, ``pixel`` N(0, 1) per pixel.
    """
    needs = gives = ANY

    def __init__(self, EPSILON: Any = 0.5, sl: Any = 0.02, sh: Any = 0.4, r1: Any = 0.3,
                 mean: Sequence[Any] = (0.0, 0.0, 0.0), attempt: int = 100, use_log_aspect: bool = False,
                 mode: str = "const") -> None:
        self.epsilon = parse_number(EPSILON, "EPSILON")
        self.sl, self.sh = parse_number(sl, "sl"), parse_number(sh, "sh")
        r1 = parse_number(r1, "r1")
        if not 0 <= self.epsilon <= 1:
            raise ConfigError(f"EPSILON (the erasing probability) must lie in [0, 1], got {EPSILON!r}")
        if not 0 < self.sl <= self.sh <= 1:
            raise ConfigError(f"need 0 < sl <= sh <= 1 (area fractions), got sl={sl!r}, sh={sh!r}")
        if r1 <= 0:
            raise ConfigError(f"r1 (the smallest aspect ratio) must be > 0, got {r1!r}")
        self.aspect = (min(r1, 1 / r1), max(r1, 1 / r1))
        self.use_log_aspect = bool(use_log_aspect)
        if not isinstance(attempt, int) or attempt < 1:
            raise ConfigError(f"attempt must be a positive int, got {attempt!r}")
        self.attempt = attempt
        if mode not in ("const", "rand", "pixel"):
            raise ConfigError(f"mode must be const, rand or pixel, got {mode!r}")
        self.mode = mode
        self.mean = np.array([parse_number(m, "mean") for m in mean], dtype=np.float64)

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        if rng.random() > self.epsilon:
            return img
        height, width = _hw(img, self.layout)
        channels = img.shape[0] if self.layout == CHW else img.shape[2]
        for _ in range(self.attempt):
            area = rng.uniform(self.sl, self.sh) * height * width
            if self.use_log_aspect:
                aspect = math.exp(rng.uniform(math.log(self.aspect[0]), math.log(self.aspect[1])))
            else:
                aspect = rng.uniform(*self.aspect)
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < h < height and 0 < w < width:
                top, left = rng.randint(0, height - h), rng.randint(0, width - w)
                if self.mode == "const":
                    value = np.resize(self.mean, channels)
                elif self.mode == "rand":
                    value = _rng_numpy(rng).standard_normal(channels)
                else:
                    value = _rng_numpy(rng).standard_normal((h, w, channels))
                out = img.copy()
                _fill(out, self.layout, top, left, h, w, value)
                return out
        return img


@TRANSFORMS.register(name="Cutout")
class Cutout(Op):
    """Cutout (DeVries & Taylor 2017): ``n_holes`` squares of side ``length`` centred uniformly, clipped.

    ``fill_value``: a number or one per channel (default 0, the mean after NormalizeImage), or
    ``none`` for a random 0..255 colour per hole (PaddleClas's ``fill_value: none``).
    """
    needs = gives = ANY

    def __init__(self, n_holes: int = 1, length: int = 112, fill_value: Any = (0, 0, 0)) -> None:
        if not isinstance(n_holes, int) or n_holes < 1 or not isinstance(length, int) or length < 1:
            raise ConfigError(f"n_holes and length must be positive ints, got {n_holes!r} and {length!r}")
        self.n_holes, self.length = n_holes, length
        if fill_value is None or (isinstance(fill_value, str) and fill_value.lower() == "none"):
            self.fill_value: Optional[np.ndarray] = None
        elif isinstance(fill_value, (int, float)):
            self.fill_value = np.array([float(fill_value)])
        elif isinstance(fill_value, (list, tuple)) and fill_value:
            self.fill_value = np.array([parse_number(v, "fill_value") for v in fill_value])
        else:
            raise ConfigError(f"fill_value must be a number, one number per channel or 'none', got {fill_value!r}")

    def box(self, height: int, width: int, rng: Any) -> Tuple[int, int, int, int]:
        """One hole ``(top, bottom, left, right)``: centre ``y ~ U{0..H-1}``, ``x ~ U{0..W-1}``, half side ``length // 2``."""
        y, x = rng.randrange(height), rng.randrange(width)
        half = self.length // 2
        return max(0, y - half), min(height, y + half), max(0, x - half), min(width, x + half)

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        height, width = _hw(img, self.layout)
        channels = img.shape[0] if self.layout == CHW else img.shape[2]
        out = img.copy()
        for _ in range(self.n_holes):
            top, bottom, left, right = self.box(height, width, rng)
            value = self.fill_value if self.fill_value is not None else np.array(
                [rng.randint(0, 255) for _ in range(channels)], dtype=np.float64)
            _fill(out, self.layout, top, left, bottom - top, right - left, np.resize(value, channels))
        return out


@TRANSFORMS.register(name="HideAndSeek")
class HideAndSeek(Op):
    """Hide-and-Seek (Singh & Lee 2017): pick a grid size from ``grid_sizes`` (0 = no hiding), then set each
    grid cell to 0 with probability ``hide_prob``."""
    needs = gives = ANY

    def __init__(self, grid_sizes: Sequence[int] = (0, 16, 32, 44, 56), hide_prob: Any = 0.5) -> None:
        if not isinstance(grid_sizes, (list, tuple)) or not grid_sizes or not all(
                isinstance(g, int) and g >= 0 for g in grid_sizes):
            raise ConfigError(f"grid_sizes must be a list of ints >= 0, got {grid_sizes!r}")
        self.grid_sizes = list(grid_sizes)
        self.hide_prob = parse_number(hide_prob, "hide_prob")

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        grid = self.grid_sizes[rng.randrange(len(self.grid_sizes))]
        if grid == 0:
            return img
        height, width = _hw(img, self.layout)
        out = img.copy()
        for top in range(0, height, grid):
            for left in range(0, width, grid):
                if rng.random() < self.hide_prob:
                    _fill(out, self.layout, top, left, min(grid, height - top), min(grid, width - left), 0.0)
        return out


@TRANSFORMS.register(name="GridMask")
class GridMask(Op):
    """GridMask (Chen et al. 2020), with probability ``prob``: period ``d ~ U{d1..d2-1}``, stripes of width
    ``l = int(d * ratio + 0.5)`` at a random offset removed along both axes (``mode: 1`` keeps only them),
    the mask rotated by ``U{0..rotate-1}`` degrees. ``prob`` is used as given (PaddleClas meant to ramp it
    up with the epoch through module globals that its trainer never sets)."""
    needs = gives = ANY

    def __init__(self, d1: int = 96, d2: int = 224, rotate: int = 1, ratio: Any = 0.5, mode: int = 0,
                 prob: Any = 1.0) -> None:
        if not (isinstance(d1, int) and isinstance(d2, int) and 0 < d1 < d2):
            raise ConfigError(f"need ints 0 < d1 < d2 (the grid period range), got d1={d1!r}, d2={d2!r}")
        if not isinstance(rotate, int) or rotate < 1:
            raise ConfigError(f"rotate must be an int >= 1 (angles 0..rotate-1), got {rotate!r}")
        if mode not in (0, 1):
            raise ConfigError(f"mode must be 0 (drop the grid lines) or 1 (keep only them), got {mode!r}")
        self.d1, self.d2, self.rotate, self.mode = d1, d2, rotate, mode
        self.ratio, self.prob = parse_number(ratio, "ratio"), parse_number(prob, "prob")

    def mask(self, height: int, width: int, rng: Any) -> np.ndarray:
        """The float32 [H, W] mask of one draw (1 = keep)."""
        big_h, big_w = int(1.5 * height), int(1.5 * width)
        d = rng.randrange(self.d1, self.d2)
        stripe = int(d * self.ratio + 0.5)
        off_h, off_w = rng.randrange(d), rng.randrange(d)
        keep = np.ones((big_h, big_w), np.uint8)
        rows, cols = np.arange(big_h), np.arange(big_w)
        keep[((rows - off_h) % d) < stripe, :] = 0
        keep[:, ((cols - off_w) % d) < stripe] = 0
        angle = rng.randrange(self.rotate)
        if angle:
            keep = np.asarray(Image.fromarray(keep).rotate(angle))
        top, left = (big_h - height) // 2, (big_w - width) // 2
        keep = keep[top:top + height, left:left + width].astype(np.float32)
        return 1.0 - keep if self.mode == 1 else keep

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        if rng.random() >= self.prob:
            return img
        mask = self.mask(*_hw(img, self.layout), rng)
        mask = mask[None] if self.layout == CHW else mask[:, :, None]
        return (img * mask).astype(img.dtype)
