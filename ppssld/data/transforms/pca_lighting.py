"""PaddleClas's ``PCALighting``: AlexNet-style PCA lighting noise (Krizhevsky et al. 2012).

Each image gets ``alpha ~ N(0, alphastd)`` per principal component (drawn from the sample's rng) and
every pixel is shifted by ``eigvec @ (alpha * eigval)`` in pixel units, as PaddleClas does (on 0..255
images the shift is small). HWC in, float32 HWC out. No paddle import.
"""
import logging
import random
from typing import Any, Optional, Sequence

import numpy as np

from ppssld.data.transforms.core import Op, parse_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import TRANSFORMS

logger = logging.getLogger(__name__)

EIGVAL = (0.2175, 0.0188, 0.0045)  # ImageNet RGB covariance (PaddleClas / fb.resnet.torch)
EIGVEC = ((-0.5675, 0.7192, 0.4009),
          (-0.5808, -0.0045, -0.8140),
          (-0.5836, -0.6948, 0.4203))


@TRANSFORMS.register(name="PCALighting")
class PCALighting(Op):
    """Add PCA lighting noise (PaddleClas takes no parameters; ``alphastd``, ``eigval``, ``eigvec`` may be set)."""

    def __init__(self, alphastd: Any = 0.1, eigval: Optional[Sequence[Any]] = None,
                 eigvec: Optional[Sequence[Sequence[Any]]] = None) -> None:
        self.alphastd = parse_number(alphastd, "alphastd")
        if self.alphastd < 0:
            raise ConfigError(f"alphastd must be >= 0, got {alphastd!r}")
        self.eigval = np.array(EIGVAL if eigval is None else [parse_number(v, "eigval") for v in eigval],
                               dtype=np.float32)
        self.eigvec = np.array(EIGVEC if eigvec is None else eigvec, dtype=np.float32)
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ConfigError(f"eigval needs 3 values and eigvec 3x3, got shapes {self.eigval.shape} and "
                              f"{self.eigvec.shape}")

    def shift(self, rng: Any) -> np.ndarray:
        """The per-channel (RGB) shift of one image."""
        alpha = np.array([rng.gauss(0.0, self.alphastd) for _ in range(3)], dtype=np.float32)
        return (self.eigvec * (alpha * self.eigval)[None, :]).sum(axis=1)

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        if self.alphastd == 0:
            return img
        return (img.astype(np.float32) + self.shift(rng)[None, None, :]).astype(np.float32)
