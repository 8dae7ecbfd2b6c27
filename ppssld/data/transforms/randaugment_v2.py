"""PaddleClas's ``RandAugmentV2`` (the EfficientNetV2 recipe): RandAugment with the TF EfficientNetV2 levels.

``num_layers`` ops are drawn uniformly (with replacement) from 16 and each is always applied at
``a = magnitude / 10``; the magnitude may exceed 10 (EfficientNetV2_S's last stage trains at 15):

- shear ``0.3 a`` and rotation ``30 a`` degrees, translation ``100 a`` *pixels* (not a fraction of the
  side), each with a random sign; geometric ops resample with nearest and fill with ``fillcolor``;
- colour / contrast / sharpness / brightness: the enhancement *factor* is ``1.8 a + 0.1`` (no sign);
- posterize to ``int(4 a)`` bits, solarize above ``int(256 a)``, solarize-add ``int(110 a)`` to the
  pixels below 128, cutout of a square of half side ``int(40 a)`` around a uniform centre;
- autocontrast, equalize, invert.

``progress_magnitude`` lists the magnitude of each stage of progressive training
(:mod:`ppssld.engine.progressive` rebuilds the op with ``magnitude`` set to the stage's entry);
the op itself always applies ``magnitude``. No paddle import.
"""
import logging
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ppssld.data.transforms.core import Op, parse_number
from ppssld.utils.checks import is_int
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)

MAX_LEVEL = 10.0
# posterize keeps int(4 a) bits: at most 8, so magnitude <= 20
MAX_MAGNITUDE = 20.0
OPS = ("shearX", "shearY", "translateX", "translateY", "rotate", "color", "posterize", "solarize",
       "solarize_add", "contrast", "sharpness", "brightness", "autocontrast", "equalize", "invert", "cutout")
SIGNED = ("shearX", "shearY", "translateX", "translateY", "rotate")
_ENHANCE = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness,
            "brightness": ImageEnhance.Brightness}
Fill = Tuple[int, int, int]


def levels(magnitude: float) -> Dict[str, float]:
    """Strength of each op at ``magnitude`` (0..20)."""
    a = magnitude / MAX_LEVEL
    enhance = 1.8 * a + 0.1
    return {"shearX": 0.3 * a, "shearY": 0.3 * a, "translateX": 100.0 * a, "translateY": 100.0 * a,
            "rotate": 30.0 * a, "color": enhance, "posterize": int(4.0 * a), "solarize": int(256.0 * a),
            "solarize_add": int(110.0 * a), "contrast": enhance, "sharpness": enhance, "brightness": enhance,
            "autocontrast": 0, "equalize": 0, "invert": 0, "cutout": int(40.0 * a)}


def solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    """Add ``add`` (capped at 255) to every channel value below ``threshold``."""
    table = [min(255, v + add) if v < threshold else v for v in range(256)]
    return img.point(table * len(img.getbands()))


def cutout(img: Image.Image, half: int, centre: Tuple[int, int], fill: Fill) -> Image.Image:
    """Paint ``fill`` over the square of half side ``half`` around ``centre`` = (row, column), clipped."""
    arr = np.array(img)
    row, col = centre
    arr[max(0, row - half):max(0, row + half), max(0, col - half):max(0, col + half)] = fill
    return Image.fromarray(arr)


def apply_v2(img: Image.Image, name: str, level: float, sign: int, fill: Fill,
             centre: Optional[Tuple[int, int]] = None) -> Image.Image:
    """Apply op ``name`` at ``level``; ``sign`` (+1 / -1) for the signed ops, ``centre`` for cutout."""
    affine = {"shearX": (1, level * sign, 0, 0, 1, 0), "shearY": (1, 0, 0, level * sign, 1, 0),
              "translateX": (1, 0, level * sign, 0, 1, 0), "translateY": (1, 0, 0, 0, 1, level * sign)}
    if name in affine:
        return img.transform(img.size, Image.AFFINE, affine[name], Image.NEAREST, fillcolor=fill)
    if name == "rotate":
        return img.rotate(level * sign, Image.NEAREST, fillcolor=fill)
    if name in _ENHANCE:
        return _ENHANCE[name](img).enhance(level)
    if name == "posterize":
        return ImageOps.posterize(img, int(level))
    if name == "solarize":
        return ImageOps.solarize(img, int(level))
    if name == "solarize_add":
        return solarize_add(img, int(level))
    if name == "cutout":
        return cutout(img, int(level), centre or (0, 0), fill)
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "invert":
        return ImageOps.invert(img)
    raise KeyError(f"unknown RandAugmentV2 op {name!r}; valid: {', '.join(OPS)}")


def check_magnitude(value: Any, name: str) -> float:
    """A magnitude in ``[0, 20]`` (the posterize level ``int(4 a)`` must stay a bit count <= 8)."""
    magnitude = parse_number(value, name)
    if not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ConfigError(f"{name} must lie in [0, {MAX_MAGNITUDE:g}] (10 is RandAugment's top level; "
                          f"EfficientNetV2 goes to 15), got {value!r}")
    return magnitude


def check_progress_magnitude(value: Any) -> Optional[List[float]]:
    """``progress_magnitude``: None, or a non-empty list of magnitudes (one per training stage)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"progress_magnitude must be a non-empty list of magnitudes (one per stage of "
                          f"Global.train_mode: progressive), got {value!r}")
    return [check_magnitude(v, f"progress_magnitude[{i}]") for i, v in enumerate(value)]


def _fill(fillcolor: Any) -> Fill:
    fill = (fillcolor,) * 3 if is_int(fillcolor) else fillcolor
    if not isinstance(fill, (list, tuple)) or len(fill) != 3 or not all(is_int(c) and 0 <= c <= 255 for c in fill):
        raise ConfigError(f"fillcolor must be an int or 3 ints in [0, 255], got {fillcolor!r}")
    return (int(fill[0]), int(fill[1]), int(fill[2]))


@TRANSFORMS.register(name="RandAugmentV2")
class RandAugmentV2(Op):
    """RandAugmentV2 on uint8 HWC RGB (keys ``num_layers``, ``magnitude``, ``progress_magnitude``, ``fillcolor``)."""
    needs_uint8 = True

    def __init__(self, num_layers: int = 2, magnitude: Any = 5, progress_magnitude: Optional[Sequence[Any]] = None,
                 fillcolor: Any = (128, 128, 128)) -> None:
        if not is_int(num_layers) or num_layers < 0:
            raise ConfigError(f"num_layers must be a non-negative int, got {num_layers!r}")
        self.num_layers = num_layers
        self.magnitude = check_magnitude(magnitude, "magnitude")
        self.progress_magnitude = check_progress_magnitude(progress_magnitude)
        self.levels = levels(self.magnitude)
        self.fill = _fill(fillcolor)

    def plan(self, img_size: Tuple[int, int], rng: Any) -> List[Tuple[str, int, Optional[Tuple[int, int]]]]:
        """The draws of one image of ``img_size`` = (w, h): ``[(op, sign, cutout centre), ...]`` in order."""
        steps = []
        width, height = img_size
        for _ in range(self.num_layers):
            name = OPS[rng.randrange(len(OPS))]
            sign = rng.choice((-1, 1)) if name in SIGNED else 1
            centre = (rng.randint(0, height), rng.randint(0, width)) if name == "cutout" else None
            steps.append((name, sign, centre))
        return steps

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        pil = Image.fromarray(np.ascontiguousarray(img))
        for name, sign, centre in self.plan(pil.size, rng):
            pil = apply_v2(pil, name, self.levels[name], sign, self.fill, centre)
        return np.asarray(pil)
