"""PaddleClas's pad-then-crop pair of the PULC attribute configs: ``Padv2`` and ``RandomCropImage``.

``Padv2`` puts the image on a canvas of ``size`` ([w, h]; or the next multiple of ``size_divisor``
when no size is given) filled with ``fill_value``; ``pad_mode`` places it: 0 top-left, 1 centred,
2 bottom-right, -1 at ``offsets`` ([x, y]). Like PaddleClas it returns float32. ``RandomCropImage``
cuts a ``size`` ([w, h]) window at a random position, without resizing. The crop position comes
from the sample's rng. No paddle import (the deploy path shares the transform modules).
"""
import logging
import math
import random
from typing import Any, Optional, Tuple

import numpy as np

from ppssld.data.transforms.core import Op, size_pair, parse_number
from ppssld.utils.checks import is_int
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)


def _int_pair(value: Any, name: str) -> Tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ConfigError(f"{name} must be a pair [x, y] of non-negative ints, got {value!r}")
    return int(value[0]), int(value[1])


@TRANSFORMS.register(name="Padv2")
class Padv2(Op):
    """Pad an HWC image to ``size`` (or a multiple of ``size_divisor``); float32 out (PaddleClas keys)."""

    def __init__(self, size: Any = None, size_divisor: int = 32, pad_mode: int = 0, offsets: Any = None,
                 fill_value: Any = (127.5, 127.5, 127.5)) -> None:
        self.size: Optional[Tuple[int, int]] = None if size is None else size_pair(size)
        if not is_int(size_divisor) or size_divisor < 1:
            raise ConfigError(f"size_divisor must be a positive int, got {size_divisor!r}")
        self.size_divisor = size_divisor
        if pad_mode not in (-1, 0, 1, 2):
            raise ConfigError(f"pad_mode must be -1 (at offsets), 0 (top-left), 1 (centre) or 2 (bottom-right), "
                              f"got {pad_mode!r}")
        self.pad_mode = pad_mode
        if pad_mode == -1 and offsets is None:
            raise ConfigError("pad_mode -1 places the image at offsets: give offsets: [x, y]")
        self.offsets = _int_pair(offsets, "offsets") if pad_mode == -1 else None
        fill = [fill_value] * 3 if not isinstance(fill_value, (list, tuple)) else list(fill_value)
        if len(fill) != 3:
            raise ConfigError(f"fill_value must be a number or 3 numbers (RGB), got {fill_value!r}")
        self.fill = np.array([parse_number(v, "fill_value") for v in fill], dtype=np.float32)

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        im_h, im_w = img.shape[:2]
        if self.size is not None:
            width, height = self.size
            if im_h > height or im_w > width:
                raise DataError(f"Padv2: the image is {im_w}x{im_h}, larger than the padded size {width}x{height}; "
                                f"resize it first or raise size")
        else:
            height = int(math.ceil(im_h / self.size_divisor) * self.size_divisor)
            width = int(math.ceil(im_w / self.size_divisor) * self.size_divisor)
        if (height, width) == (im_h, im_w):
            return img.astype(np.float32)
        if self.pad_mode == -1:
            left, top = self.offsets
        elif self.pad_mode == 0:
            left, top = 0, 0
        elif self.pad_mode == 1:
            left, top = (width - im_w) // 2, (height - im_h) // 2
        else:
            left, top = width - im_w, height - im_h
        if left + im_w > width or top + im_h > height:
            raise DataError(f"Padv2: offsets {list(self.offsets)} put the {im_w}x{im_h} image outside the "
                            f"{width}x{height} canvas")
        canvas = np.empty((height, width, img.shape[2]), dtype=np.float32)
        canvas[...] = self.fill[:img.shape[2]]
        canvas[top:top + im_h, left:left + im_w] = img.astype(np.float32)
        return canvas


@TRANSFORMS.register(name="RandomCropImage")
class RandomCropImage(Op):
    """Cut a random ``size`` ([w, h] or int) window, no resize (PaddleClas's RandomCropImage)."""

    def __init__(self, size: Any) -> None:
        self.size = size_pair(size)

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        im_h, im_w = img.shape[:2]
        width, height = self.size
        if im_h < height or im_w < width:
            raise DataError(f"RandomCropImage: the image is {im_w}x{im_h}, smaller than the crop {width}x{height}; "
                            f"pad (Padv2) or resize first")
        top = rng.randint(0, im_h - height)
        left = rng.randint(0, im_w - width)
        return img[top:top + height, left:left + width]
