"""AutoAugment (ImageNet policy) and RandAugment on PIL images, driven by an explicit RNG.

Both follow the papers (Cubuk et al. 2019, arXiv 1805.09501; Cubuk et al. 2020, arXiv
1909.13719) with PaddleClas's magnitude ranges. Magnitude always grows the strength of an
operation (PaddleClas's RandAugment weakens posterize/solarize as the magnitude grows; here
they get stronger, as in the paper). The operations are :mod:`~ppssld.data.transforms.pil_ops`'s; this
module maps each name to one with its argument and resampling. No paddle import: the deploy path reuses
this module.
"""
import logging
from typing import Any, Callable, Dict, Sequence, Tuple

from PIL import Image

from ppssld.data.transforms import pil_ops

logger = logging.getLogger(__name__)

Fill = Tuple[int, int, int]
LEVELS = 10  # AutoAugment magnitudes are indices 0..9 into each range

# (lowest, highest) strength of each operation; index i of 10 maps linearly between them.
RANGES: Dict[str, Tuple[float, float]] = {
    "shearX": (0.0, 0.3), "shearY": (0.0, 0.3),
    "translateX": (0.0, 150.0 / 331.0), "translateY": (0.0, 150.0 / 331.0),
    "rotate": (0.0, 30.0),
    "color": (0.0, 0.9), "contrast": (0.0, 0.9), "sharpness": (0.0, 0.9), "brightness": (0.0, 0.9),
    "posterize": (8.0, 4.0),      # bits kept
    "solarize": (256.0, 0.0),     # threshold
    "autocontrast": (0.0, 0.0), "equalize": (0.0, 0.0), "invert": (0.0, 0.0),
}

# The ImageNet policy of the AutoAugment paper: 25 sub-policies of two (op, probability, level).
IMAGENET_POLICY: Sequence[Tuple[Tuple[str, float, int], Tuple[str, float, int]]] = (
    (("posterize", 0.4, 8), ("rotate", 0.6, 9)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, 5)),
    (("equalize", 0.8, 8), ("equalize", 0.6, 3)),
    (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
    (("equalize", 0.4, 7), ("solarize", 0.2, 4)),
    (("equalize", 0.4, 4), ("rotate", 0.8, 8)),
    (("solarize", 0.6, 3), ("equalize", 0.6, 7)),
    (("posterize", 0.8, 5), ("equalize", 1.0, 2)),
    (("rotate", 0.2, 3), ("solarize", 0.6, 8)),
    (("equalize", 0.6, 8), ("posterize", 0.4, 6)),
    (("rotate", 0.8, 8), ("color", 0.4, 0)),
    (("rotate", 0.4, 9), ("equalize", 0.6, 2)),
    (("equalize", 0.0, 7), ("equalize", 0.8, 8)),
    (("invert", 0.6, 4), ("equalize", 1.0, 8)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("rotate", 0.8, 8), ("color", 1.0, 2)),
    (("color", 0.8, 8), ("solarize", 0.8, 7)),
    (("sharpness", 0.4, 7), ("invert", 0.6, 8)),
    (("shearX", 0.6, 5), ("equalize", 1.0, 9)),
    (("color", 0.4, 0), ("equalize", 0.6, 3)),
    (("equalize", 0.4, 7), ("solarize", 0.2, 4)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, 5)),
    (("invert", 0.6, 4), ("equalize", 1.0, 8)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("equalize", 0.8, 8), ("equalize", 0.6, 3)),
)


def strength(op: str, fraction: float) -> float:
    """Interpolate the range of ``op`` at ``fraction`` in [0, 1]."""
    low, high = RANGES[op]
    return low + (high - low) * fraction


def _sign(rng: Any, value: float) -> float:
    return value if rng.random() < 0.5 else -value


def _signed(rng: Any, value: float, img: Image.Image) -> float:
    return _sign(rng, value)


def _factor(rng: Any, value: float, img: Image.Image) -> float:
    return max(0.0, 1.0 + _sign(rng, value))


def _unused(rng: Any, value: float, img: Image.Image) -> float:
    return 0.0


# name -> (op of :data:`ppssld.data.transforms.pil_ops.OPS`, its argument from (rng, strength, image), resampling)
TABLE: Dict[str, Tuple[str, Callable[[Any, float, Image.Image], float], int]] = {
    "shearX": ("shear_x", _signed, Image.BICUBIC), "shearY": ("shear_y", _signed, Image.BICUBIC),
    "translateX": ("translate_x", lambda rng, v, img: _sign(rng, v) * img.size[0], Image.NEAREST),
    "translateY": ("translate_y", lambda rng, v, img: _sign(rng, v) * img.size[1], Image.NEAREST),
    "rotate": ("rotate", _signed, Image.BILINEAR),
    "color": ("color", _factor, Image.BILINEAR), "contrast": ("contrast", _factor, Image.BILINEAR),
    "sharpness": ("sharpness", _factor, Image.BILINEAR), "brightness": ("brightness", _factor, Image.BILINEAR),
    "posterize": ("posterize", lambda rng, v, img: int(min(8, max(1, round(v)))), Image.BILINEAR),
    "solarize": ("solarize", lambda rng, v, img: int(round(v)), Image.BILINEAR),
    "autocontrast": ("autocontrast", _unused, Image.BILINEAR), "equalize": ("equalize", _unused, Image.BILINEAR),
    "invert": ("invert", _unused, Image.BILINEAR),
}


def apply_op(img: Image.Image, op: str, value: float, rng: Any, fill: Fill) -> Image.Image:
    """Apply one named operation of strength ``value`` (sign drawn from ``rng`` where it has one).

    Args:
        img: RGB PIL image.
        op: a key of :data:`RANGES`.
        value: strength (degrees, fraction, bits or threshold, per op).
        rng: ``random.Random``-like generator.
        fill: RGB colour for pixels moved in from outside.
    Returns:
        A new PIL image.
    """
    if op not in TABLE:
        raise KeyError(f"unknown augmentation {op!r}; valid: {', '.join(RANGES)}")
    name, argument, resample = TABLE[op]
    return pil_ops.apply(name, img, argument(rng, value, img), fill, resample)


class ImageNetPolicy:
    """AutoAugment: pick one of the 25 ImageNet sub-policies, apply each of its two ops with its probability."""

    def __init__(self, fillcolor: Fill = (128, 128, 128)) -> None:
        self.fill = tuple(int(c) for c in fillcolor)

    def __call__(self, img: Image.Image, rng: Any) -> Image.Image:
        """Augment ``img`` with randomness from ``rng``."""
        sub_policy = IMAGENET_POLICY[rng.randrange(len(IMAGENET_POLICY))]
        for op, prob, level in sub_policy:
            if rng.random() < prob:
                img = apply_op(img, op, strength(op, level / (LEVELS - 1)), rng, self.fill)
        return img


class RandAugmentPolicy:
    """RandAugment: ``num_layers`` ops drawn uniformly, each at strength ``magnitude / 10``."""

    def __init__(self, num_layers: int = 2, magnitude: float = 5, fillcolor: Fill = (128, 128, 128)) -> None:
        self.num_layers = int(num_layers)
        self.fraction = min(1.0, max(0.0, float(magnitude) / LEVELS))
        self.fill = tuple(int(c) for c in fillcolor)
        self.ops = list(RANGES)

    def __call__(self, img: Image.Image, rng: Any) -> Image.Image:
        """Augment ``img`` with randomness from ``rng``."""
        for _ in range(self.num_layers):
            op = self.ops[rng.randrange(len(self.ops))]
            img = apply_op(img, op, strength(op, self.fraction), rng, self.fill)
        return img
