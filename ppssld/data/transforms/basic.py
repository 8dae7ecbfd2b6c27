"""The basic PaddleClas ops: decode, resize, crops, flip, normalize, CHW, and the AutoAugment / RandAugment policies.

Randomness comes from the ``rng`` each op is called with (the sample's generator, see
:class:`ppssld.data.transforms.Compose`). No paddle import (the deploy path shares these ops).
"""
import logging
import random
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ppssld.data.transforms.autoaugment import ImageNetPolicy, RandAugmentPolicy
from ppssld.data.transforms.core import (CHW, HWC, BYTES, Op, check_backend, interp_name, size_pair, as_rgb_array,
                                  decode_image, parse_number, resize)
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)


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
        self.backend = check_backend(backend)
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
        self.size = None if resize_short else size_pair(size)
        self.backend = check_backend(backend)
        self.interpolation = interp_name(interpolation, self.backend)

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
    """Random area/aspect crop, resized to ``size`` (Inception-style RandomResizedCrop).

    ``progress_size`` lists the size of each stage of progressive training (:mod:`ppssld.engine.progressive`
    rebuilds the op with ``size`` set to the stage's entry); the op itself always resizes to ``size``.
    """

    def __init__(self, size: Any, scale: Optional[Sequence[float]] = None, ratio: Optional[Sequence[float]] = None,
                 interpolation: Optional[str] = None, use_log_aspect: bool = False, backend: str = "cv2",
                 progress_size: Any = None) -> None:
        if progress_size is not None and (not isinstance(progress_size, (list, tuple)) or not progress_size):
            raise ConfigError(f"progress_size must be a non-empty list of sizes (one per stage of "
                              f"Global.train_mode: progressive), got {progress_size!r}")
        self.progress_size = None if progress_size is None else [
            size_pair(s, f"progress_size[{i}]") for i, s in enumerate(progress_size)]
        self.size = size_pair(size)
        self.scale = self._pair(scale, (0.08, 1.0), "scale")
        self.ratio = self._pair(ratio, (3.0 / 4.0, 4.0 / 3.0), "ratio")
        if self.ratio[0] <= 0:
            raise ConfigError(f"ratio must be positive, got {ratio!r}")
        self.use_log_aspect = bool(use_log_aspect)
        self.backend = check_backend(backend)
        self.interpolation = interp_name(interpolation, self.backend)

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
        self.size = size_pair(size)

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        width, height = self.size
        img_h, img_w = img.shape[:2]
        if img_w < width or img_h < height:
            raise DataError(f"CropImage: image is {img_w}x{img_h}, smaller than the crop {width}x{height}; "
                            f"resize first (e.g. ResizeImage resize_short >= {max(width, height)})")
        left, top = (img_w - width) // 2, (img_h - height) // 2
        return img[top:top + height, left:left + width]


@TRANSFORMS.register(name="CropImageAtRatio")
class CropImageAtRatio(Op):
    """Centre square of side ``size / (size + pad)`` of the short side, resized to ``size`` x ``size`` (cv2).

    EfficientNetV2's evaluation crop (PaddleClas's ``CropImageAtRatio``: ``size: 384, pad: 32``).
    """

    def __init__(self, size: int, pad: int, interpolation: str = "bilinear") -> None:
        if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
            raise ConfigError(f"size must be a positive int (the output side), got {size!r}")
        if not (isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0):
            raise ConfigError(f"pad must be an int >= 0 (the crop keeps size / (size + pad) of the short side), "
                              f"got {pad!r}")
        self.size, self.pad = size, pad
        self.interpolation = interp_name(interpolation, "cv2")
        if self.interpolation == "random":
            raise ConfigError("interpolation 'random' is not valid for CropImageAtRatio (an evaluation crop)")

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        height, width = img.shape[:2]
        side = max(1, int(self.size / (self.size + self.pad) * min(height, width)))
        top, left = (height - side) // 2, (width - side) // 2
        return resize(img[top:top + side, left:left + side], (self.size, self.size), self.interpolation, "cv2", rng)


@TRANSFORMS.register(name="NormalizeImage")
class NormalizeImage(Op):
    """``(img * scale - mean) / std`` as float32 (float16 with ``output_fp16``).

    ``order: chw`` means the input is already CHW; ``''`` or ``hwc`` means HWC (PaddleClas).
    """

    def __init__(self, scale: Any = None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, order: str = "chw", output_fp16: bool = False,
                 channel_num: int = 3) -> None:
        self.scale = np.float32(1.0 / 255.0 if scale is None else parse_number(scale, "scale"))
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name} must be a list of 3 numbers (one per RGB channel), got {value!r}")
        mean = [0.485, 0.456, 0.406] if mean is None else [parse_number(m, "mean") for m in mean]
        std = [0.229, 0.224, 0.225] if std is None else [parse_number(s, "std") for s in std]
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"mean and std need 3 values (one per RGB channel), got {mean!r} and {std!r}")
        if any(s == 0 for s in std):
            raise ConfigError(f"std must not contain 0, got {std!r}")
        if channel_num not in (3, 4):
            raise ConfigError(f"channel_num must be 3 or 4, got {channel_num!r}")
        if order is not None and not isinstance(order, str):
            raise ConfigError(f"order must be 'chw', 'hwc' or '' (= hwc), got {order!r}")
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
