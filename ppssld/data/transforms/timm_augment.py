"""PaddleClas's ``TimmAutoAugment``: timm-style RandAugment (and the original AutoAugment policy) from a string.

``config_str`` is timm's form: ``rand-m9-mstd0.5-inc1`` = RandAugment, magnitude 9 of 10, magnitude
noise N(0, 0.5) per op, the "increasing" op set; sections ``m`` (magnitude), ``n`` (ops per image,
default 2), ``mstd`` (magnitude std), ``inc`` (1 = increasing set), ``w`` (0 = timm's op weights,
drawn without replacement). ``original[-mstd0.5]`` is the AutoAugment paper's ImageNet policy with
timm's level mapping. Each op is applied with probability 0.5 (RandAugment) or its policy probability;
``null`` means no augmentation. Levels follow timm: rotate 30 deg, shear 0.3, translate 0.45 of the
side, enhance ``1 +- 0.9 m/10`` (increasing) or ``0.1 + 1.8 m/10``, posterize / solarize / solarize-add
thresholds scaled by ``m/10``; geometric fills use ``mean`` in 0..255. The operations are
:mod:`~ppssld.data.transforms.pil_ops`'s. All randomness comes from the sample's rng (no paddle import: the
deploy path shares this module).
"""
import logging
import random
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ppssld.data.transforms import pil_ops
from ppssld.data.transforms.autoaugment import IMAGENET_POLICY
from ppssld.data.transforms.core import Op, parse_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)

MAX_LEVEL = 10.0
_INTERP = pil_ops.RESAMPLE
_RANDOM_INTERP = (Image.BILINEAR, Image.BICUBIC)


def _negate(rng: Any, value: float) -> float:
    return -value if rng.random() > 0.5 else value


def _frac(m: float) -> float:
    return m / MAX_LEVEL


# name -> level function: (magnitude, rng, image) -> the argument of its operation
LEVELS: Dict[str, Callable[[float, Any, Image.Image], float]] = {
    "AutoContrast": lambda m, rng, img: 0.0, "Equalize": lambda m, rng, img: 0.0, "Invert": lambda m, rng, img: 0.0,
    "Rotate": lambda m, rng, img: _negate(rng, _frac(m) * 30.0),
    "Posterize": lambda m, rng, img: int(_frac(m) * 4),
    "PosterizeIncreasing": lambda m, rng, img: 4 - int(_frac(m) * 4),
    "PosterizeOriginal": lambda m, rng, img: int(_frac(m) * 4) + 4,
    "Solarize": lambda m, rng, img: int(_frac(m) * 256),
    "SolarizeIncreasing": lambda m, rng, img: 256 - int(_frac(m) * 256),
    "SolarizeAdd": lambda m, rng, img: int(_frac(m) * 110),
    "ShearX": lambda m, rng, img: _negate(rng, _frac(m) * 0.3),
    "ShearY": lambda m, rng, img: _negate(rng, _frac(m) * 0.3),
    "TranslateXRel": lambda m, rng, img: _negate(rng, _frac(m) * 0.45) * img.size[0],
    "TranslateYRel": lambda m, rng, img: _negate(rng, _frac(m) * 0.45) * img.size[1],
}
for _name in ("Color", "Contrast", "Brightness", "Sharpness"):
    LEVELS[_name] = lambda m, rng, img: _frac(m) * 1.8 + 0.1
    LEVELS[_name + "Increasing"] = lambda m, rng, img: 1.0 + _negate(rng, _frac(m) * 0.9)

# base name (without Increasing / Original) -> op of :data:`ppssld.data.transforms.pil_ops.OPS`
TABLE = {"AutoContrast": "autocontrast", "Equalize": "equalize", "Invert": "invert", "Rotate": "rotate",
         "Posterize": "posterize", "Solarize": "solarize", "SolarizeAdd": "solarize_add", "Color": "color",
         "Contrast": "contrast", "Brightness": "brightness", "Sharpness": "sharpness", "ShearX": "shear_x",
         "ShearY": "shear_y", "TranslateXRel": "translate_x", "TranslateYRel": "translate_y"}
GEOMETRIC = tuple(name for name, op in TABLE.items() if op in pil_ops.GEOMETRIC)  # resampled: interpolation drawn
_WHOLE = ("Posterize", "Solarize", "SolarizeAdd")  # their argument is a whole number (bits, threshold, amount)


def apply_timm_op(img: Image.Image, name: str, arg: float, fill: Tuple[int, ...], resample: int) -> Image.Image:
    """Apply op ``name`` with its level argument ``arg`` (as :data:`LEVELS` computes it)."""
    base = name.replace("Increasing", "").replace("Original", "")
    if base not in TABLE:
        raise KeyError(f"unknown timm augmentation {name!r}; valid: {', '.join(LEVELS)}")
    return pil_ops.apply(TABLE[base], img, int(arg) if base in _WHOLE else arg, fill, resample)


RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPS = tuple(n + "Increasing" if n in ("Posterize", "Solarize", "Color", "Contrast", "Brightness",
                                                      "Sharpness") else n for n in RAND_OPS)
# timm's weight set 0 (w0), by base op name
RAND_WEIGHTS_0 = {"Rotate": 0.3, "ShearX": 0.2, "ShearY": 0.2, "TranslateXRel": 0.1, "TranslateYRel": 0.1,
                  "Color": .025, "Sharpness": 0.025, "AutoContrast": 0.025, "Solarize": .005, "SolarizeAdd": .005,
                  "Contrast": .005, "Brightness": .005, "Equalize": .005, "Posterize": 0.0, "Invert": 0.0}
_ORIGINAL_NAMES = {"posterize": "PosterizeOriginal", "rotate": "Rotate", "solarize": "Solarize",
                   "autocontrast": "AutoContrast", "equalize": "Equalize", "color": "Color", "contrast": "Contrast",
                   "invert": "Invert", "sharpness": "Sharpness", "shearX": "ShearX"}


class TimmOp:
    """One op at a magnitude: applied with ``prob``; magnitude ~ N(magnitude, std) clipped to [0, 10]."""

    def __init__(self, name: str, prob: float, magnitude: float, std: float, fill: Tuple[int, ...],
                 interpolations: Sequence[int]) -> None:
        self.name, self.prob, self.magnitude, self.std = name, prob, magnitude, std
        self.fill, self.interpolations = fill, tuple(interpolations)

    def __call__(self, img: Image.Image, rng: Any) -> Image.Image:
        if self.prob < 1.0 and rng.random() > self.prob:
            return img
        magnitude = self.magnitude
        if self.std > 0:
            magnitude = rng.gauss(magnitude, self.std)
        magnitude = min(MAX_LEVEL, max(0.0, magnitude))
        arg = LEVELS[self.name](magnitude, rng, img)
        resample = self.interpolations[0]
        if self.name in GEOMETRIC and len(self.interpolations) > 1:
            resample = self.interpolations[rng.randrange(len(self.interpolations))]
        return apply_timm_op(img, self.name, arg, self.fill, resample)


def _sections(config_str: str, valid: Sequence[str]) -> Dict[str, str]:
    found = {}
    for part in config_str.split("-")[1:]:
        match = re.fullmatch(r"([a-z]+)(\d.*)", part)
        if not match or match.group(1) not in valid:
            raise ConfigError(f"config_str {config_str!r}: section {part!r} is not one of "
                              f"{', '.join(k + '<number>' for k in valid)}")
        found[match.group(1)] = match.group(2)
    return found


class TimmPolicy:
    """RandAugment or AutoAugment from a timm config string (see the module docstring)."""

    def __init__(self, config_str: str, fill: Tuple[int, ...], interpolations: Sequence[int]) -> None:
        self.kind = config_str.split("-")[0]
        if self.kind == "rand":
            sec = _sections(config_str, ("m", "n", "mstd", "inc", "w"))
            magnitude = parse_number(sec.get("m", MAX_LEVEL), "config_str m")
            std = parse_number(sec.get("mstd", 0), "config_str mstd")
            self.num_layers = int(parse_number(sec.get("n", 2), "config_str n"))
            names = RAND_INCREASING_OPS if int(parse_number(sec.get("inc", 0), "inc")) else RAND_OPS
            self.ops = [TimmOp(n, 0.5, magnitude, std, fill, interpolations) for n in names]
            self.weights: Optional[np.ndarray] = None
            if "w" in sec:
                if sec["w"] != "0":
                    raise ConfigError(f"config_str {config_str!r}: only weight set w0 exists")
                raw = np.array([RAND_WEIGHTS_0[n.replace("Increasing", "")] for n in names])
                self.weights = raw / raw.sum()
        elif self.kind == "original":
            std = parse_number(_sections(config_str, ("mstd",)).get("mstd", 0), "config_str mstd")
            self.policy = [[TimmOp(_ORIGINAL_NAMES[op], prob, level, std, fill, interpolations)
                            for op, prob, level in pair] for pair in IMAGENET_POLICY]
        else:
            raise ConfigError(f"config_str {config_str!r}: ppssld supports timm's RandAugment ('rand-m9-mstd0.5-inc1') "
                              f"and the original AutoAugment policy ('original-mstd0.5'); AugMix and the v0 "
                              f"policies are not implemented")

    def _pick(self, rng: Any) -> List[TimmOp]:
        if self.weights is None:
            return [self.ops[rng.randrange(len(self.ops))] for _ in range(self.num_layers)]
        left = list(range(len(self.ops)))
        weights = list(self.weights)
        chosen = []
        for _ in range(min(self.num_layers, len(left))):
            index = rng.choices(range(len(left)), weights=weights)[0]
            chosen.append(self.ops[left.pop(index)])
            weights.pop(index)
        return chosen

    def __call__(self, img: Image.Image, rng: Any) -> Image.Image:
        ops = self._pick(rng) if self.kind == "rand" else self.policy[rng.randrange(len(self.policy))]
        for op in ops:
            img = op(img, rng)
        return img


@TRANSFORMS.register(name="TimmAutoAugment")
class TimmAutoAugment(Op):
    """PaddleClas ``TimmAutoAugment`` (uint8 HWC RGB in and out).

    Args:
        config_str: timm policy string (module docstring); null = no augmentation.
        interpolation: resampling of geometric ops (``bicubic``, ``bilinear``, ...; ``random`` or null:
            bilinear or bicubic drawn per op).
        img_size: the training size (int or [w, h]); accepted for PaddleClas (only absolute translations,
            which these policies do not use, would read it).
        mean: fill colour of geometric ops, as fractions of 255.
        prob: probability to augment an image at all.
    """
    needs_uint8 = True

    def __init__(self, config_str: Optional[str] = "rand-m9-mstd0.5-inc1", interpolation: Optional[str] = "bicubic",
                 img_size: Any = 224, mean: Sequence[Any] = (0.485, 0.456, 0.406), prob: Any = 1.0) -> None:
        if not (isinstance(img_size, int) and img_size > 0) and not (
                isinstance(img_size, (list, tuple)) and len(img_size) == 2 and all(
                    isinstance(v, int) and v > 0 for v in img_size)):
            raise ConfigError(f"img_size must be a positive int or a [w, h] pair, got {img_size!r}")
        if not isinstance(mean, (list, tuple)) or len(mean) != 3:
            raise ConfigError(f"mean must hold 3 fractions (one per RGB channel), got {mean!r}")
        fill = tuple(min(255, int(round(255 * parse_number(m, "mean")))) for m in mean)
        key = None if interpolation is None else str(interpolation).lower()
        if key not in (None, "random") and key not in _INTERP:
            raise ConfigError(f"interpolation must be one of {', '.join(list(_INTERP) + ['random'])}, "
                              f"got {interpolation!r}")
        interps = _RANDOM_INTERP if key in (None, "random") else (_INTERP[key],)
        self.prob = parse_number(prob, "prob")
        if config_str is not None and not isinstance(config_str, str):
            raise ConfigError(f"config_str must be a string like 'rand-m9-mstd0.5-inc1' or null, got {config_str!r}")
        self.policy = TimmPolicy(config_str.strip(), fill, interps) if config_str else None

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        if self.policy is None or rng.random() >= self.prob:
            return img
        return np.asarray(self.policy(Image.fromarray(np.ascontiguousarray(img)), rng))
