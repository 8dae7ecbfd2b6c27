"""The one table of PIL image operations that the AutoAugment-style augmenters draw from.

AutoAugment / RandAugment (:mod:`~ppssld.data.transforms.autoaugment`), PaddleClas's RandAugmentV3
(:mod:`~ppssld.data.transforms.randaugment_v3`), timm's RandAugment (:mod:`~ppssld.data.transforms.timm_augment`)
and ColorJitter (:mod:`~ppssld.data.transforms.color_jitter`) differ in which ops they draw, how a magnitude
becomes an op's argument and which resampling they use; the operations themselves are these, one each.
Every entry of :data:`OPS` takes ``(image, argument, fill, resample)``; the argument is final (signed
degrees, shear factor, translation in pixels, enhance factor, bits, threshold, amount added) and ops that
move no pixels ignore ``fill`` and ``resample``. No paddle import.
"""
from typing import Any, Callable, Dict, Tuple

from PIL import Image, ImageEnhance, ImageOps

Fill = Tuple[int, ...]
Operation = Callable[[Image.Image, float, Fill, int], Image.Image]

# resampling filters by the names configs use (each augmenter accepts its own subset)
RESAMPLE: Dict[str, int] = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                            "lanczos": Image.LANCZOS, "hamming": Image.HAMMING, "box": Image.BOX}
SOLARIZE_ADD_BELOW = 128  # solarize_add brightens the pixels below this value


def _affine(img: Image.Image, coeffs: Tuple[float, ...], fill: Fill, resample: int) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs, resample, fillcolor=fill)


def _enhancer(kind: Callable[[Image.Image], Any]) -> Operation:
    return lambda img, factor, fill, resample: kind(img).enhance(factor)


def posterize(img: Image.Image, bits: float) -> Image.Image:
    """Keep the ``int(bits)`` highest bits of each channel (8 or more: the image unchanged; below 0: 0)."""
    bits = int(bits)
    return img if bits >= 8 else ImageOps.posterize(img, max(0, bits))


def solarize_add(img: Image.Image, add: float) -> Image.Image:
    """Add ``int(add)`` (capped at 255) to every channel value below :data:`SOLARIZE_ADD_BELOW`."""
    lut = [min(255, i + int(add)) if i < SOLARIZE_ADD_BELOW else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


OPS: Dict[str, Operation] = {
    "shear_x": lambda img, arg, fill, resample: _affine(img, (1, arg, 0, 0, 1, 0), fill, resample),
    "shear_y": lambda img, arg, fill, resample: _affine(img, (1, 0, 0, arg, 1, 0), fill, resample),
    "translate_x": lambda img, arg, fill, resample: _affine(img, (1, 0, arg, 0, 1, 0), fill, resample),
    "translate_y": lambda img, arg, fill, resample: _affine(img, (1, 0, 0, 0, 1, arg), fill, resample),
    "rotate": lambda img, arg, fill, resample: img.rotate(arg, resample, fillcolor=fill),
    "color": _enhancer(ImageEnhance.Color),
    "contrast": _enhancer(ImageEnhance.Contrast),
    "sharpness": _enhancer(ImageEnhance.Sharpness),
    "brightness": _enhancer(ImageEnhance.Brightness),
    "posterize": lambda img, arg, fill, resample: posterize(img, arg),
    "solarize": lambda img, arg, fill, resample: ImageOps.solarize(img, arg),  # pixels >= arg are inverted
    "solarize_add": lambda img, arg, fill, resample: solarize_add(img, arg),
    "autocontrast": lambda img, arg, fill, resample: ImageOps.autocontrast(img),
    "equalize": lambda img, arg, fill, resample: ImageOps.equalize(img),
    "invert": lambda img, arg, fill, resample: ImageOps.invert(img),
}
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")  # the ops that use fill and resample


def apply(name: str, img: Image.Image, arg: float = 0.0, fill: Fill = (128, 128, 128),
          resample: int = Image.BILINEAR) -> Image.Image:
    """Op ``name`` of :data:`OPS` on ``img`` with its final argument ``arg``; a new PIL image (or ``img``).

    Raises:
        KeyError: ``name`` is not in :data:`OPS` (a bug of the caller's table: users never name these).
    """
    if name not in OPS:
        raise KeyError(f"unknown PIL op {name!r}; valid: {', '.join(OPS)}")
    return OPS[name](img, arg, fill, resample)
