"""Build a checked chain of transform ops from a PaddleClas ``transform_ops`` list.

The ops live in their own modules (:mod:`ppssld.data.transforms.core` holds the shared helpers and the
``Op`` base, :mod:`ppssld.data.transforms.basic` the basic ops; the augmentation modules register theirs
in the one ``TRANSFORMS`` registry when :mod:`ppssld.data.transforms` is imported). The names used elsewhere
are re-exported by the package.

This module must not import paddle: the deploy predictor and the PaddleHub module reuse it so
that every runtime preprocesses identically. Randomness comes from an explicit ``rng``
(``random.Random``-like) passed to :class:`Compose`, so a sample's augmentation can be a pure
function of (seed, epoch, index); without one, Python's global ``random`` is used.
"""
import logging
import random
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ppssld.data.transforms.basic import (AutoAugment, CropImage, DecodeImage, NormalizeImage, RandAugment,  # noqa: F401
                                   RandCropImage, RandFlipImage, ResizeImage, ToCHWImage)
from ppssld.data.transforms.core import (ANY, BYTES, CHW, HWC, MAX_IMAGE_PIXELS, ImageDecodeError, Op,  # noqa: F401
                                  as_rgb_array, check_image_size, decode_image, header_size, parse_number, resize)
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)

# PaddleClas ops we know of but do not implement: named in the error instead of a bare "unknown".
PADDLECLAS_ONLY = ("AugMix", "RandomRotation", "Pad", "RandCropImageV2", "CropWithPadding",
                   "RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize", "Resize", "CenterCrop",
                   "RandomGrayscale", "RandomRot90", "BlurImage", "RandomInterpolationAugment",
                   "RandAugmentV4", "RandomApply", "OpSampler", "MixupOperator", "CutmixOperator", "FmixOperator")


class Compose:
    """A checked chain of ops. Call with encoded bytes (or an HWC RGB array) and an optional rng.

    Attributes:
        ops: ``(name, op)`` pairs.
        decodes: the chain starts with DecodeImage.
        output_layout: ``"HWC"`` or ``"CHW"``.
    """

    def __init__(self, ops: List[Tuple[str, Op]]) -> None:
        self.ops = ops
        self.decodes = bool(ops) and isinstance(ops[0][1], DecodeImage)
        self.output_layout = ops[-1][1].gives if ops else HWC

    def __call__(self, data: Any, rng: Any = None) -> np.ndarray:
        """Run every op.

        Args:
            data: encoded image bytes, or an HWC uint8 RGB array when the chain has no DecodeImage.
            rng: ``random.Random``-like generator; None uses Python's global ``random``.
        Returns:
            The transformed array.
        """
        rng = random if rng is None else rng
        if not self.decodes:
            if isinstance(data, (bytes, bytearray, memoryview)):
                data = decode_image(bytes(data))
            data = as_rgb_array(data)
        for _, op in self.ops:
            data = op(data, rng)
        return data

    def __repr__(self) -> str:
        return f"Compose({', '.join(name for name, _ in self.ops)})"


def _split_item(item: Any, where: str) -> Tuple[str, Dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(f"{where}: each transform is a one-key mapping like '- ResizeImage: {{resize_short: 256}}', "
                          f"got {item!r}")
    name, params = next(iter(item.items()))
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.{name}: parameters must be a mapping (or empty), got {params!r}")
    return str(name), params


def _build_op(name: str, params: Dict[str, Any], where: str) -> Op:
    if name not in TRANSFORMS and name in PADDLECLAS_ONLY:
        raise ConfigError(f"{where}: PaddleClas op {name!r} is not implemented in ppssld. "
                          f"Supported ops: {', '.join(TRANSFORMS.names())}")
    try:
        return TRANSFORMS.build(name, params, where)
    except ConfigError as exc:
        if str(exc).startswith(("unknown transform", "transform ")):
            raise
        raise ConfigError(f"{where}.{name}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{where}.{name}: {exc}") from exc


def build_transforms(ops: Optional[List[Any]], where: str = "transform_ops") -> Compose:
    """Build a :class:`Compose` from a PaddleClas ``transform_ops`` list.

    Args:
        ops: list of one-key mappings ``{OpName: {param: value}}`` (None or [] = no transform).
        where: config location for error messages.
    Returns:
        A callable mapping encoded bytes (or an HWC uint8 RGB array) to the transformed array.
    Raises:
        ConfigError: unknown op or parameter (with the closest names), bad value, or ops in an
            impossible order (DecodeImage not first, HWC op after ToCHWImage, ...).
    """
    if ops is None:
        return Compose([])
    if not isinstance(ops, list):
        raise ConfigError(f"{where} must be a list of transforms, got {type(ops).__name__}")
    built: List[Tuple[str, Op]] = []
    layout = BYTES
    normalized = False
    for index, item in enumerate(ops):
        at = f"{where}[{index}]"
        name, params = _split_item(item, at)
        op = _build_op(name, params, at)
        if isinstance(op, DecodeImage) and index != 0:
            raise ConfigError(f"{at}: DecodeImage must be the first transform")
        if layout == BYTES and not isinstance(op, DecodeImage):
            layout = HWC
        if op.needs not in (BYTES, ANY) and op.needs != layout:
            hint = ("put ToCHWImage last" if layout == CHW else "set NormalizeImage order: '' for HWC images")
            raise ConfigError(f"{at}.{name} expects a {op.needs} image but gets {layout} here; {hint}")
        if normalized and getattr(op, "needs_uint8", False):
            raise ConfigError(f"{at}.{name} works on uint8 images: put it before NormalizeImage")
        normalized = normalized or isinstance(op, NormalizeImage)
        if op.needs == ANY:
            op.layout = layout
        else:
            layout = op.gives
        built.append((name, op))
    return Compose(built)


def validate_transforms(ops: Optional[List[Any]], where: str = "transform_ops") -> None:
    """Check a ``transform_ops`` list (names, parameters, values, order) without using it.

    Raises:
        ConfigError: as :func:`build_transforms`.
    """
    build_transforms(ops, where)
