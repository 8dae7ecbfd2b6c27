"""Image transforms with PaddleClas op names and parameters (numpy / OpenCV / PIL only).

This module must not import paddle: the deploy predictor and the PaddleHub module reuse it so
that every runtime preprocesses identically. Randomness comes from an explicit ``rng``
(``random.Random``-like) passed to :class:`Compose`, so a sample's augmentation can be a pure
function of (seed, epoch, index); without one, Python's global ``random`` is used.

Sizes follow PaddleClas: an int, or a ``[width, height]`` pair.
"""
import io
import logging
import random
import re
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ppssld.data.autoaugment import ImageNetPolicy, RandAugmentPolicy
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)

HWC, CHW, BYTES = "HWC", "CHW", "bytes"
MAX_IMAGE_PIXELS = 100_000_000  # larger images are refused from their header, before decoding
ANY = "any"  # an op that works on HWC or CHW arrays; build_transforms sets its ``layout``

_CV2_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
               "bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
_PIL_INTERP = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
               "box": Image.BOX, "lanczos": Image.LANCZOS, "hamming": Image.HAMMING}
_RANDOM_INTERP = ("bilinear", "bicubic")

# PaddleClas ops we know of but do not implement: named in the error instead of a bare "unknown".
PADDLECLAS_ONLY = ("AugMix", "RandomRotation", "Pad", "Padv2", "RandCropImageV2", "RandomCropImage",
                   "CropImageAtRatio", "CropWithPadding", "RandomResizedCrop", "RandomHorizontalFlip",
                   "ToTensor", "Normalize", "Resize", "CenterCrop", "RandomGrayscale", "PCALighting",
                   "RandomRot90", "BlurImage", "RandomInterpolationAugment", "RandAugmentV2",
                   "RandAugmentV3", "RandAugmentV4", "RandomApply", "OpSampler", "MixupOperator",
                   "CutmixOperator", "FmixOperator")

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_FRACTION = re.compile(rf"^\s*({_NUMBER})\s*(?:/\s*({_NUMBER})\s*)?$")


class ImageDecodeError(DataError):
    """Bytes that are not a decodable image (the only error ``skip_bad_images`` skips)."""


def parse_number(value: Any, name: str = "value") -> float:
    """Parse a number or a ``"a/b"`` fraction string (PaddleClas writes ``scale: 1.0/255.0``) without eval.

    Args:
        value: int, float or string such as ``"0.5"``, ``"1/255"``, ``"1.0/255.0"``, ``"1e-3"``.
        name: parameter name for the error message.
    Returns:
        The value as float.
    Raises:
        ConfigError: anything else (expressions are never evaluated).
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            num = float(match.group(1))
            if match.group(2) is None:
                return num
            den = float(match.group(2))
            if den == 0:
                raise ConfigError(f"{name}: division by zero in {value!r}")
            return num / den
    raise ConfigError(f"{name} must be a number or a fraction like '1.0/255.0', got {value!r}")


def _size_pair(size: Any, name: str = "size") -> Tuple[int, int]:
    """``int`` or ``[w, h]`` -> (w, h)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size), int(size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size):
        return int(size[0]), int(size[1])
    raise ConfigError(f"{name} must be a positive int or a [width, height] pair, got {size!r}")


def _interp_name(interpolation: Optional[str], backend: str) -> Optional[str]:
    if interpolation is None:
        return None
    names = _CV2_INTERP if backend == "cv2" else _PIL_INTERP
    key = str(interpolation).lower()
    if key != "random" and key not in names:
        raise ConfigError(f"interpolation {interpolation!r} is not valid for backend {backend!r}; "
                          f"valid: {', '.join(list(names) + ['random'])}")
    return key


def _backend(backend: str) -> str:
    key = str(backend).lower()
    if key not in ("cv2", "pil"):
        raise ConfigError(f"backend must be 'cv2' or 'pil', got {backend!r}")
    return key


def resize(img: np.ndarray, size: Tuple[int, int], interpolation: Optional[str] = None,
           backend: str = "cv2", rng: Any = random) -> np.ndarray:
    """Resize an HWC uint8 image to ``size`` = (w, h).

    Args:
        img: HWC array.
        size: target (width, height).
        interpolation: a name from the backend's table, ``"random"`` or None (bilinear).
        backend: ``"cv2"`` or ``"pil"``.
        rng: generator used by ``"random"``.
    Returns:
        The resized HWC array.
    """
    name = interpolation or "bilinear"
    if name == "random":
        name = _RANDOM_INTERP[rng.randrange(len(_RANDOM_INTERP))]
    if backend == "pil":
        return np.asarray(Image.fromarray(img).resize(size, _PIL_INTERP[name]))
    out = cv2.resize(img, size, interpolation=_CV2_INTERP[name])
    return out if out.ndim == 3 else out[:, :, None]


def header_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from the image header, without decoding the pixels; None if PIL cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as pil:
                return pil.size
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return (int(found.group(1)), 1) if found else (MAX_IMAGE_PIXELS + 1, 1)
    except (OSError, ValueError, SyntaxError):
        return None


def check_image_size(data: bytes) -> None:
    """Refuse an image of more than :data:`MAX_IMAGE_PIXELS` before its pixels are decoded.

    Raises:
        ImageDecodeError: too many pixels (decoding could exhaust memory).
    """
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        shown = f"{size[0]}x{size[1]} = " if size[1] > 1 else ""
        raise ImageDecodeError(f"the image is {shown}{size[0] * size[1] / 1e6:.0f} megapixels, more than the "
                               f"{MAX_IMAGE_PIXELS // 1_000_000} megapixel limit; it is refused before decoding "
                               f"(it could exhaust memory). Resize it")


def decode_image(data: bytes, backend: str = "cv2") -> np.ndarray:
    """Decode encoded image bytes to HWC uint8 RGB (grayscale, palette and RGBA become RGB).

    Args:
        data: the file's bytes.
        backend: ``"cv2"`` (PIL is tried when OpenCV cannot read the format) or ``"pil"``.
    Returns:
        HWC uint8 RGB array.
    Raises:
        ImageDecodeError: empty or undecodable data.
    """
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    check_image_size(data)
    if backend == "cv2":
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is not None and img.size:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            return np.asarray(pil.convert("RGB")).copy()
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"not a decodable image ({len(data)} bytes in no format OpenCV or PIL reads)") \
            from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a decodable image ({len(data)} bytes: {exc})") from exc


def as_rgb_array(img: Any) -> np.ndarray:
    """Make an HWC uint8 3-channel array from an array or PIL image (gray -> 3 channels, alpha dropped)."""
    if isinstance(img, Image.Image):
        img = np.asarray(img.convert("RGB"))
    if not isinstance(img, np.ndarray):
        raise DataError(f"expected encoded bytes or an HWC image array, got {type(img).__name__}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise DataError(f"expected an HWC image, got an array of shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


class Op:
    """Base of every transform op: ``needs`` / ``gives`` are the image layouts in and out.

    An op with ``needs = ANY`` keeps the layout it is given and reads it from ``self.layout``.
    """
    needs: str = HWC
    gives: str = HWC
    layout: str = HWC

    def __call__(self, img: Any, rng: Any = random) -> Any:
        """Transform one image."""
        raise NotImplementedError


@TRANSFORMS.register(name="DecodeImage")
class DecodeImage(Op):
    """Encoded bytes -> HWC uint8 (RGB unless ``to_rgb: False``; CHW with ``channel_first``).

    ``to_np: False`` means RGB HWC whatever ``to_rgb`` and ``channel_first`` say, as in PaddleClas.
    """
    needs = BYTES

    def __init__(self, to_np: bool = True, to_rgb: bool = True, channel_first: bool = False,
                 backend: str = "cv2") -> None:
        # to_np: False (PaddleClas hands an RGB HWC PIL image to the next op and ignores to_rgb and
        # channel_first) gives the same pixels as an RGB HWC array, which every ppssld op takes.
        self.to_rgb = bool(to_rgb) or not to_np
        self.channel_first = bool(channel_first) and bool(to_np)
        self.backend = _backend(backend)
        self.gives = CHW if self.channel_first else HWC

    def __call__(self, img: Any, rng: Any = random) -> np.ndarray:
        arr = decode_image(img, self.backend) if isinstance(img, (bytes, bytearray, memoryview)) \
            else as_rgb_array(img)
        if not self.to_rgb:
            arr = arr[:, :, ::-1]
        if self.channel_first:
            arr = arr.transpose((2, 0, 1))
        return np.ascontiguousarray(arr)


@TRANSFORMS.register(name="ResizeImage")
class ResizeImage(Op):
    """Resize to ``size`` ([w, h] or int) or so that the short side is ``resize_short``."""

    def __init__(self, size: Any = None, resize_short: Optional[int] = None, interpolation: Optional[str] = None,
                 backend: str = "cv2", return_numpy: bool = True) -> None:
        if not return_numpy:
            raise ConfigError("return_numpy: False is not supported: ppssld ops work on numpy arrays")
        if resize_short is not None and not (isinstance(resize_short, int) and resize_short > 0):
            raise ConfigError(f"resize_short must be a positive int, got {resize_short!r}")
        if resize_short is None and size is None:
            raise ConfigError("give either size or resize_short")
        self.resize_short = resize_short
        self.size = None if resize_short else _size_pair(size)
        self.backend = _backend(backend)
        self.interpolation = _interp_name(interpolation, self.backend)

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        height, width = img.shape[:2]
        if self.resize_short:
            ratio = self.resize_short / min(width, height)
            target = (max(1, int(round(width * ratio))), max(1, int(round(height * ratio))))
        else:
            target = self.size
        return resize(img, target, self.interpolation, self.backend, rng)


@TRANSFORMS.register(name="RandCropImage")
class RandCropImage(Op):
    """Random area/aspect crop, resized to ``size`` (Inception-style RandomResizedCrop)."""

    def __init__(self, size: Any, scale: Optional[Sequence[float]] = None, ratio: Optional[Sequence[float]] = None,
                 interpolation: Optional[str] = None, use_log_aspect: bool = False, backend: str = "cv2",
                 progress_size: Any = None) -> None:
        if progress_size is not None:
            raise ConfigError("progress_size (progressive resizing) is not supported; remove it")
        self.size = _size_pair(size)
        self.scale = self._pair(scale, (0.08, 1.0), "scale")
        self.ratio = self._pair(ratio, (3.0 / 4.0, 4.0 / 3.0), "ratio")
        if self.ratio[0] <= 0:
            raise ConfigError(f"ratio must be positive, got {ratio!r}")
        self.use_log_aspect = bool(use_log_aspect)
        self.backend = _backend(backend)
        self.interpolation = _interp_name(interpolation, self.backend)

    @staticmethod
    def _pair(value: Any, default: Tuple[float, float], name: str) -> Tuple[float, float]:
        if value is None:
            return default
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"{name} must be a [low, high] pair, got {value!r}")
        low, high = (parse_number(v, name) for v in value)
        if not 0 <= low <= high:
            raise ConfigError(f"{name} must satisfy 0 <= low <= high, got {value!r}")
        return low, high

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        height, width = img.shape[:2]
        if self.use_log_aspect:
            aspect = float(np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]))))
        else:
            aspect = rng.uniform(*self.ratio)
        bound = min((width / height) / aspect, (height / width) * aspect)
        area = width * height * rng.uniform(min(self.scale[0], bound), min(self.scale[1], bound))
        crop_w = min(width, max(1, int(np.sqrt(area * aspect))))
        crop_h = min(height, max(1, int(np.sqrt(area / aspect))))
        left = rng.randint(0, width - crop_w)
        top = rng.randint(0, height - crop_h)
        return resize(img[top:top + crop_h, left:left + crop_w], self.size, self.interpolation, self.backend, rng)


@TRANSFORMS.register(name="RandFlipImage")
class RandFlipImage(Op):
    """Flip with probability 1/2: ``flip_code`` 1 horizontal, 0 vertical, -1 both."""

    def __init__(self, flip_code: int = 1) -> None:
        if flip_code not in (-1, 0, 1):
            raise ConfigError(f"flip_code must be 1 (horizontal), 0 (vertical) or -1 (both), got {flip_code!r}")
        self.flip_code = flip_code

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        if rng.randint(0, 1) == 0:
            return img
        if self.flip_code == 1:
            return np.ascontiguousarray(img[:, ::-1])
        if self.flip_code == 0:
            return np.ascontiguousarray(img[::-1])
        return np.ascontiguousarray(img[::-1, ::-1])


@TRANSFORMS.register(name="CropImage")
class CropImage(Op):
    """Centre crop to ``size`` (int or [w, h])."""

    def __init__(self, size: Any) -> None:
        self.size = _size_pair(size)

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        width, height = self.size
        img_h, img_w = img.shape[:2]
        if img_w < width or img_h < height:
            raise DataError(f"CropImage: image is {img_w}x{img_h}, smaller than the crop {width}x{height}; "
                            f"resize first (e.g. ResizeImage resize_short >= {max(width, height)})")
        left, top = (img_w - width) // 2, (img_h - height) // 2
        return img[top:top + height, left:left + width]


@TRANSFORMS.register(name="NormalizeImage")
class NormalizeImage(Op):
    """``(img * scale - mean) / std`` as float32 (float16 with ``output_fp16``).

    ``order: chw`` means the input is already CHW; ``''`` or ``hwc`` means HWC (PaddleClas).
    """

    def __init__(self, scale: Any = None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, order: str = "chw", output_fp16: bool = False,
                 channel_num: int = 3) -> None:
        self.scale = np.float32(1.0 / 255.0 if scale is None else parse_number(scale, "scale"))
        mean = [0.485, 0.456, 0.406] if mean is None else [parse_number(m, "mean") for m in mean]
        std = [0.229, 0.224, 0.225] if std is None else [parse_number(s, "std") for s in std]
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"mean and std need 3 values (one per RGB channel), got {mean!r} and {std!r}")
        if any(s == 0 for s in std):
            raise ConfigError(f"std must not contain 0, got {std!r}")
        if channel_num not in (3, 4):
            raise ConfigError(f"channel_num must be 3 or 4, got {channel_num!r}")
        order = (order or "hwc").lower()
        if order not in ("chw", "hwc"):
            raise ConfigError(f"order must be 'chw', 'hwc' or '' (= hwc), got {order!r}")
        self.needs = self.gives = CHW if order == "chw" else HWC
        shape = (3, 1, 1) if order == "chw" else (1, 1, 3)
        self.mean = np.array(mean, dtype=np.float32).reshape(shape)
        self.std = np.array(std, dtype=np.float32).reshape(shape)
        self.channel_num = channel_num
        self.dtype = np.float16 if output_fp16 else np.float32

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        out = (img.astype(np.float32) * self.scale - self.mean) / self.std
        if self.channel_num == 4:
            axis = 0 if self.needs == CHW else 2
            pad_shape = list(out.shape)
            pad_shape[axis] = 1
            out = np.concatenate([out, np.zeros(pad_shape, np.float32)], axis=axis)
        return out.astype(self.dtype)


@TRANSFORMS.register(name="ToCHWImage")
class ToCHWImage(Op):
    """HWC -> CHW."""
    gives = CHW

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        return np.ascontiguousarray(img.transpose((2, 0, 1)))


class _PilPolicyOp(Op):
    policy: Callable
    needs_uint8 = True

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        pil = Image.fromarray(np.ascontiguousarray(img))
        return np.asarray(self.policy(pil, rng))


def _fill(fillcolor: Any) -> Tuple[int, int, int]:
    if isinstance(fillcolor, int):
        fillcolor = (fillcolor,) * 3
    if not isinstance(fillcolor, (list, tuple)) or len(fillcolor) != 3:
        raise ConfigError(f"fillcolor must be an int or 3 ints, got {fillcolor!r}")
    return tuple(int(c) for c in fillcolor)


@TRANSFORMS.register(name="AutoAugment")
class AutoAugment(_PilPolicyOp):
    """AutoAugment with the ImageNet policy (uint8 HWC RGB in and out)."""

    def __init__(self, fillcolor: Any = (128, 128, 128)) -> None:
        self.policy = ImageNetPolicy(_fill(fillcolor))


@TRANSFORMS.register(name="RandAugment")
class RandAugment(_PilPolicyOp):
    """RandAugment: ``num_layers`` random ops at ``magnitude`` (0..10)."""

    def __init__(self, num_layers: int = 2, magnitude: float = 5, fillcolor: Any = (128, 128, 128)) -> None:
        if not isinstance(num_layers, int) or num_layers < 0:
            raise ConfigError(f"num_layers must be a non-negative int, got {num_layers!r}")
        magnitude = parse_number(magnitude, "magnitude")
        if not 0 <= magnitude <= 10:
            raise ConfigError(f"magnitude must lie in [0, 10], got {magnitude!r}")
        self.policy = RandAugmentPolicy(num_layers, magnitude, _fill(fillcolor))


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
