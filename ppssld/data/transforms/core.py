"""Shared pieces of the transform ops: layouts, number and size parsing, resizing, decoding, the ``Op`` base.

No paddle import: the deploy predictor and the PaddleHub module reuse the transform modules so that
every runtime preprocesses identically. Sizes follow PaddleClas: an int, or a ``[width, height]`` pair.
"""
import io
import logging
import random
import re
import warnings
from typing import Any, Optional, Tuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ppssld.utils.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

HWC, CHW, BYTES = "HWC", "CHW", "bytes"
MAX_IMAGE_PIXELS = 100_000_000  # larger images are refused from their header, before decoding
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANY = "any"  # an op that works on HWC or CHW arrays; build_transforms sets its ``layout``

_CV2_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
               "bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
_PIL_INTERP = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
               "box": Image.BOX, "lanczos": Image.LANCZOS, "hamming": Image.HAMMING}
_RANDOM_INTERP = ("bilinear", "bicubic")

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


def size_pair(size: Any, name: str = "size") -> Tuple[int, int]:
    """``int`` or ``[w, h]`` -> (w, h)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size), int(size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size):
        return int(size[0]), int(size[1])
    raise ConfigError(f"{name} must be a positive int or a [width, height] pair, got {size!r}")


def interp_name(interpolation: Optional[str], backend: str) -> Optional[str]:
    if interpolation is None:
        return None
    names = _CV2_INTERP if backend == "cv2" else _PIL_INTERP
    key = str(interpolation).lower()
    if key != "random" and key not in names:
        raise ConfigError(f"interpolation {interpolation!r} is not valid for backend {backend!r}; "
                          f"valid: {', '.join(list(names) + ['random'])}")
    return key


def check_backend(backend: str) -> str:
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


def _png_ihdr_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) of a PNG's IHDR chunk (the size PIL reports for it), None if ``data`` does not start so."""
    if len(data) >= 24 and data[:8] == _PNG_MAGIC and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def check_image_size(data: bytes) -> None:
    """Refuse an image of more than :data:`MAX_IMAGE_PIXELS` before its pixels are decoded.

    A PNG whose IHDR size is within the limit passes without opening it in PIL (PIL would report that
    size or none: the check passes either way; this saves ~25 us per small image).

    Raises:
        ImageDecodeError: too many pixels (decoding could exhaust memory).
    """
    fast = _png_ihdr_size(data)
    if fast is not None and fast[0] * fast[1] <= MAX_IMAGE_PIXELS:
        return
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


def decode_grey(data: bytes, backend: str = "cv2") -> np.ndarray:
    """The grey (HW uint8) image of :func:`decode_image`'s result, ``cv2.cvtColor(rgb, COLOR_RGB2GRAY)``,
    bit for bit, without the RGB copy in between when OpenCV decodes (BGR2GRAY of the BGR array).

    Raises:
        ImageDecodeError: as :func:`decode_image`.
    """
    if backend == "cv2" and data:
        check_image_size(data)
        # an 8-bit grey PNG (IHDR bit depth 8, colour type 0) decodes to the grey values COLOR replicates
        grey = _png_ihdr_size(data) is not None and data[24:26] == b"\x08\x00"
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
        if img is not None and img.size:
            return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(decode_image(data, backend), cv2.COLOR_RGB2GRAY)


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
