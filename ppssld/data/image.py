"""The one image pipeline: read a file, decode it, run the transforms, hand the network a CHW float32 array.

Training and evaluation (:class:`ppssld.data.datasets.imagenet.ImageNetDataset`), mining, the pre-flight
check, export's ``inference.yml`` and the deploy predictor all call these functions, so an image
becomes the same array everywhere.

PaddleClas's convention is kept: ``NormalizeImage`` with ``order: ''`` leaves the image HWC and
its dataset transposes every result to CHW itself, so a transform list may end without
``ToCHWImage``. Here the transpose happens exactly when the chain's output is HWC (a chain that
ends in ``ToCHWImage``, or in ``NormalizeImage`` with ``order: chw``, is already CHW).

This module must not import paddle (the deploy predictor and the PaddleHub module use it).
"""
import random
from typing import Any, Optional

import numpy as np

from ppssld.data.transforms.core import decode_grey
from ppssld.data.transforms import CHW, Compose, DecodeImage, ImageDecodeError, decode_image

__all__ = ["read_bytes", "decode_file", "decode_file_grey", "decode_backend", "needs_transpose", "to_network",
           "transform_image", "load_and_transform"]


def read_bytes(path: str) -> bytes:
    """The bytes of an image file.

    Raises:
        ImageDecodeError: the file cannot be read (missing, a folder, no permission), naming it.
    """
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc


def decode_backend(transform: Optional[Compose]) -> str:
    """The decoder a chain uses: its ``DecodeImage`` backend, else OpenCV (as the chain would)."""
    if transform is not None and transform.decodes:
        op = transform.ops[0][1]
        if isinstance(op, DecodeImage):
            return op.backend
    return "cv2"


def decode_file(path: str, transform: Optional[Compose] = None) -> np.ndarray:
    """Read and decode an image to HWC uint8 RGB with the decoder ``transform`` would use.

    Raises:
        ImageDecodeError: unreadable or undecodable file.
    """
    return decode_image(read_bytes(path), decode_backend(transform))


def decode_file_grey(path: str, transform: Optional[Compose] = None) -> np.ndarray:
    """The grey (HW uint8) copy of :func:`decode_file`'s image (``COLOR_RGB2GRAY``, bit for bit), decoded directly.

    Raises:
        ImageDecodeError: unreadable or undecodable file.
    """
    return decode_grey(read_bytes(path), decode_backend(transform))


def needs_transpose(transform: Compose) -> bool:
    """Whether the chain's output is HWC, so the network input is its transpose (PaddleClas's dataset rule)."""
    return transform.output_layout != CHW


def to_network(out: np.ndarray, transform: Compose) -> np.ndarray:
    """A chain's output as the network's input: CHW, contiguous float32."""
    if out.ndim == 3 and needs_transpose(transform):
        out = out.transpose((2, 0, 1))
    return np.ascontiguousarray(out, dtype=np.float32)


def transform_image(item: Any, transform: Compose, rng: Any = None) -> np.ndarray:
    """Encoded bytes, or an HWC uint8 RGB array from :func:`decode_file`, through ``transform`` to CHW float32.

    Args:
        item: the image.
        transform: the chain (:func:`ppssld.data.transforms.build_transforms`).
        rng: ``random.Random``-like generator for random ops; None uses Python's ``random``.
    Returns:
        The network input for one image, ``[C, H, W]`` float32.
    Raises:
        ImageDecodeError: undecodable bytes; DataError: an op that cannot apply (e.g. a crop larger than the image).
    """
    return to_network(transform(item, random if rng is None else rng), transform)


def load_and_transform(path: str, transform: Compose, rng: Any = None) -> np.ndarray:
    """Read an image file and transform it to the network's CHW float32 input (:func:`transform_image`).

    Raises:
        ImageDecodeError: unreadable or undecodable file; DataError: an op that cannot apply.
    """
    return transform_image(read_bytes(path), transform, rng)
