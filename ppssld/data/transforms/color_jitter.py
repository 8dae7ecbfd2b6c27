"""PaddleClas ``ColorJitter`` (paddle.vision's ColorJitter behind a probability), on PIL, from the sample's rng.

Each of brightness, contrast, saturation (a value ``v``: factor ``~ U[max(0, 1 - v), 1 + v]``, or a
``[low, high]`` pair) and hue (``h``: shift ``~ U[-h, h]`` of the hue circle, ``h <= 0.5``) that is
non-zero is applied once, in a random order, with PIL's ``ImageEnhance`` (Brightness, Contrast,
Color, from :mod:`~ppssld.data.transforms.pil_ops`) and an HSV hue rotation. No paddle import (the deploy
path shares the transform modules).
"""
import logging
import random
from typing import Any, List, Optional, Tuple

import numpy as np
from PIL import Image

from ppssld.data.transforms import pil_ops
from ppssld.data.transforms.core import Op, parse_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)

ENHANCE_OPS = {"brightness": "brightness", "contrast": "contrast", "saturation": "color"}  # -> pil_ops.OPS


def _factor_range(value: Any, name: str) -> Optional[Tuple[float, float]]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{name} must be a number or a [low, high] pair, got {value!r}")
        low, high = (parse_number(v, name) for v in value)
        if not 0 <= low <= high:
            raise ConfigError(f"{name} range must satisfy 0 <= low <= high, got {value!r}")
        return low, high
    v = parse_number(value, name)
    if v < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return None if v == 0 else (max(0.0, 1.0 - v), 1.0 + v)


def shift_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue of an RGB image by ``shift`` of the circle (``-0.5..0.5``), via PIL's HSV (uint8 wrap)."""
    h, s, v = img.convert("HSV").split()
    hue = (np.asarray(h, dtype=np.int16) + int(round(shift * 255))) % 256
    return Image.merge("HSV", (Image.fromarray(hue.astype(np.uint8), "L"), s, v)).convert("RGB")


@TRANSFORMS.register(name="ColorJitter")
class ColorJitter(Op):
    """Random brightness / contrast / saturation / hue, with probability ``prob`` (PaddleClas default 2 = always).

    Args:
        brightness / contrast / saturation: ``v`` >= 0 (factor in ``[1 - v, 1 + v]``) or a ``[low, high]`` pair.
        hue: ``h`` in ``[0, 0.5]`` (shift in ``[-h, h]``) or a pair within ``[-0.5, 0.5]``.
        prob: probability to jitter an image.
    """
    needs_uint8 = True

    def __init__(self, brightness: Any = 0, contrast: Any = 0, saturation: Any = 0, hue: Any = 0,
                 prob: Any = 2) -> None:
        self.ranges = {"brightness": _factor_range(brightness, "brightness"),
                       "contrast": _factor_range(contrast, "contrast"),
                       "saturation": _factor_range(saturation, "saturation")}
        if isinstance(hue, (list, tuple)):
            if len(hue) != 2:
                raise ConfigError(f"hue must be a number or a [low, high] pair, got {hue!r}")
            low, high = (parse_number(v, "hue") for v in hue)
        else:
            high = parse_number(hue, "hue")
            low = -high
        if not -0.5 <= low <= high <= 0.5:
            raise ConfigError(f"hue must lie in [0, 0.5] (or be a pair within [-0.5, 0.5]), got {hue!r}")
        self.ranges["hue"] = None if low == high == 0 else (low, high)
        self.prob = parse_number(prob, "prob")

    def plan(self, rng: Any) -> List[Tuple[str, float]]:
        """The draws of one image: ``[(kind, factor or hue shift), ...]`` in application order (empty: unchanged)."""
        if rng.random() >= self.prob:
            return []
        kinds = [k for k, r in self.ranges.items() if r is not None]
        rng.shuffle(kinds)
        return [(k, rng.uniform(*self.ranges[k])) for k in kinds]

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        steps = self.plan(rng)
        if not steps:
            return img
        pil = Image.fromarray(np.ascontiguousarray(img))
        for kind, value in steps:
            pil = shift_hue(pil, value) if kind == "hue" else pil_ops.apply(ENHANCE_OPS[kind], pil, value)
        return np.asarray(pil)
