"""PaddleClas's ``RandAugmentV3`` (the MobileViTV2/V3 recipe): RandAugment with fixed levels.

``num_layers`` ops are drawn uniformly (with replacement) from 14 and each is always applied at
strength ``a = magnitude / 10``: shear 0.3a, translate 150/331 a of the side, rotate 30a degrees,
colour / contrast / sharpness / brightness factor ``1 +- 0.9a``, posterize to ``8 - int(4a)`` bits,
solarize above ``255 (1 - a)``, and autocontrast, equalize, invert. Geometric ops resample with
``interpolation`` and fill with ``fillcolor``; signs come from the sample's rng. The operations are
:mod:`~ppssld.data.transforms.pil_ops`'s. No paddle import.
"""
import logging
import random
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
from PIL import Image

from ppssld.data.transforms import pil_ops
from ppssld.data.transforms.core import Op, parse_number
from ppssld.utils.checks import is_int
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)

MAX_LEVEL = 10.0
# PaddleClas maps these names (anything else falls back to bilinear there; here it is an error)
INTERPOLATIONS = {name: pil_ops.RESAMPLE[name] for name in ("bicubic", "lanczos", "hamming", "bilinear")}
OPS = ("shearX", "shearY", "translateX", "translateY", "rotate", "color", "posterize", "solarize", "contrast",
       "sharpness", "brightness", "autocontrast", "equalize", "invert")


def levels(magnitude: float) -> Dict[str, float]:
    """Strength of each op at ``magnitude`` (0..10)."""
    a = magnitude / MAX_LEVEL
    return {"shearX": 0.3 * a, "shearY": 0.3 * a, "translateX": 150.0 / 331.0 * a, "translateY": 150.0 / 331.0 * a,
            "rotate": 30.0 * a, "color": 0.9 * a, "posterize": 8 - int(4.0 * a), "solarize": 255.0 * (1 - a),
            "contrast": 0.9 * a, "sharpness": 0.9 * a, "brightness": 0.9 * a, "autocontrast": 0.0,
            "equalize": 0.0, "invert": 0.0}


def _signed(level: float, sign: int, img: Image.Image) -> float:
    return level * sign


def _factor(level: float, sign: int, img: Image.Image) -> float:
    return 1 + level * sign


def _unsigned(level: float, sign: int, img: Image.Image) -> float:
    return level


# name -> (op of :data:`ppssld.data.transforms.pil_ops.OPS`, its argument from (level, sign, image))
TABLE: Dict[str, Tuple[str, Callable[[float, int, Image.Image], float]]] = {
    "shearX": ("shear_x", _signed), "shearY": ("shear_y", _signed),
    "translateX": ("translate_x", lambda level, sign, img: level * img.size[0] * sign),
    "translateY": ("translate_y", lambda level, sign, img: level * img.size[1] * sign),
    "rotate": ("rotate", _signed), "color": ("color", _factor), "contrast": ("contrast", _factor),
    "sharpness": ("sharpness", _factor), "brightness": ("brightness", _factor),
    "posterize": ("posterize", lambda level, sign, img: int(level)),
    "solarize": ("solarize", _unsigned),  # the threshold as a float: 255 (1 - a), as PaddleClas passes it
    "autocontrast": ("autocontrast", _unsigned), "equalize": ("equalize", _unsigned), "invert": ("invert", _unsigned),
}


def apply_v3(img: Image.Image, name: str, level: float, sign: int, resample: int,
             fill: Tuple[int, ...]) -> Image.Image:
    """Apply op ``name`` at ``level`` with ``sign`` (+1 / -1; ignored by the unsigned ops)."""
    if name not in TABLE:
        raise KeyError(f"unknown RandAugmentV3 op {name!r}; valid: {', '.join(OPS)}")
    op, argument = TABLE[name]
    return pil_ops.apply(op, img, argument(level, sign, img), fill, resample)


@TRANSFORMS.register(name="RandAugmentV3")
class RandAugmentV3(Op):
    """RandAugmentV3 on uint8 HWC RGB (keys ``num_layers``, ``magnitude``, ``fillcolor``, ``interpolation``)."""
    needs_uint8 = True

    def __init__(self, num_layers: int = 2, magnitude: Any = 3, fillcolor: Any = (0, 0, 0),
                 interpolation: str = "bicubic") -> None:
        if not is_int(num_layers) or num_layers < 0:
            raise ConfigError(f"num_layers must be a non-negative int, got {num_layers!r}")
        self.num_layers = num_layers
        self.magnitude = parse_number(magnitude, "magnitude")
        if not 0 <= self.magnitude <= MAX_LEVEL:
            raise ConfigError(f"magnitude must lie in [0, 10], got {magnitude!r}")
        self.levels = levels(self.magnitude)
        fill = (fillcolor,) * 3 if isinstance(fillcolor, int) else fillcolor
        if not isinstance(fill, (list, tuple)) or len(fill) != 3 or not all(isinstance(c, int) for c in fill):
            raise ConfigError(f"fillcolor must be an int or 3 ints, got {fillcolor!r}")
        self.fill = tuple(fill)
        key = str(interpolation).lower()
        if key not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.resample = INTERPOLATIONS[key]

    def plan(self, rng: Any) -> List[Tuple[str, int]]:
        """The draws of one image: ``[(op name, sign), ...]`` in application order."""
        steps = []
        for _ in range(self.num_layers):
            name = OPS[rng.randrange(len(OPS))]
            steps.append((name, -1 if rng.random() < 0.5 else 1))
        return steps

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        pil = Image.fromarray(np.ascontiguousarray(img))
        for name, sign in self.plan(rng):
            pil = apply_v3(pil, name, self.levels[name], sign, self.resample, self.fill)
        return np.asarray(pil)
