"""CustomLabelDataset: unlabeled image lists whose label a transform makes (PaddleClas PULC
``image_orientation`` and ``clarity_assessment``), and the two label-making ops.

``RandomRot90`` rotates by ``k * 90`` degrees (k uniform in 0..3; label ``k``, key
``random_rot90_orientation``); ``BlurImage`` blurs with probability ``ratio`` (Gaussian or motion blur,
equally likely; label 1, else 0; key ``blur_image``). The dataset's ``label_key`` picks which op's
label is the sample's label. In any other dataset the ops only augment and their label is dropped, as
in PaddleClas. Both draw from the dataset's (seed, epoch, index) generator, so runs are repeatable.

List format (``sample_list_path``): one image path per line; with ``delimiter`` only the first field
is the path (the rest is ignored, as PaddleClas).
"""
import logging
import os
import random
from typing import Any, List, Optional, Tuple

import cv2
import numpy as np
import paddle

from ppssld.data.datasets.imagenet import ImageNetDataset
from ppssld.data.image import read_bytes, to_network
from ppssld.data.lists.label_list import UNLABELED, Problem, Record, check_records, count_repeats, format_problems
from ppssld.data.transforms import HWC, ImageDecodeError, Op, as_rgb_array, build_transforms, decode_image
from ppssld.utils.checks import is_int, is_number
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.registry import DATASETS, TRANSFORMS

logger = logging.getLogger(__name__)


class LabelOp(Op):
    """An op that also makes a label: :meth:`apply` returns ``(image, label)``; calling it returns the image."""
    needs = HWC
    gives = HWC
    label_key = ""
    num_labels = 0

    def apply(self, img: np.ndarray, rng: Any = random) -> Tuple[np.ndarray, int]:
        raise NotImplementedError

    def __call__(self, img: np.ndarray, rng: Any = random) -> np.ndarray:
        return self.apply(img, rng)[0]


@TRANSFORMS.register(name="RandomRot90")
class RandomRot90(LabelOp):
    """Rotate counter-clockwise by ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3}; label ``k``."""
    label_key = "random_rot90_orientation"
    num_labels = 4

    def apply(self, img: np.ndarray, rng: Any = random) -> Tuple[np.ndarray, int]:
        k = rng.choice([0, 1, 2, 3])
        return (np.ascontiguousarray(np.rot90(img, k)) if k else img), k


def _odd_sizes(max_ksize: Any, name: str) -> List[int]:
    if not is_int(max_ksize) or max_ksize < 6:
        raise ConfigError(f"{name} must be an int >= 6 (kernel sizes 5, 7, ... below it), got {max_ksize!r}")
    return list(range(5, max_ksize, 2))


@TRANSFORMS.register(name="BlurImage")
class BlurImage(LabelOp):
    """With probability ``ratio``: Gaussian blur (odd kernel sizes 5.. < ``gaussian_max_ksize`` per axis) or
    motion blur (a line kernel of odd length 5.. < ``motion_max_ksize`` turned by an angle in
    ``[-motion_max_angle, motion_max_angle)``), each half the time; label 1 when blurred, else 0."""
    label_key = "blur_image"
    num_labels = 2
    needs_uint8 = True

    def __init__(self, ratio: float = 0.5, motion_max_ksize: int = 12, motion_max_angle: int = 45,
                 gaussian_max_ksize: int = 12) -> None:
        if not is_number(ratio) or not 0 <= ratio <= 1:
            raise ConfigError(f"ratio must be a probability in [0, 1], got {ratio!r}")
        if not is_int(motion_max_angle) or motion_max_angle < 1:
            raise ConfigError(f"motion_max_angle must be an int >= 1, got {motion_max_angle!r}")
        self.ratio = float(ratio)
        self.motion_sizes = _odd_sizes(motion_max_ksize, "motion_max_ksize")
        self.gaussian_sizes = _odd_sizes(gaussian_max_ksize, "gaussian_max_ksize")
        self.motion_max_angle = motion_max_angle

    def apply(self, img: np.ndarray, rng: Any = random) -> Tuple[np.ndarray, int]:
        if rng.random() > self.ratio:
            return img, 0
        if rng.choice(["gaussian", "motion"]) == "gaussian":
            size = (rng.choice(self.gaussian_sizes), rng.choice(self.gaussian_sizes))
            return cv2.GaussianBlur(img, size, 0), 1
        degree = rng.choice(self.motion_sizes)
        angle = rng.choice(range(-self.motion_max_angle, self.motion_max_angle))
        return motion_blur(img, degree, angle), 1


def motion_blur(img: np.ndarray, degree: int, angle: float) -> np.ndarray:
    """PaddleClas's motion blur: a ``degree``-long diagonal kernel rotated by ``angle``, then min-max to uint8."""
    matrix = cv2.getRotationMatrix2D((degree / 2, degree / 2), angle, 1)
    kernel = cv2.warpAffine(np.diag(np.ones(degree)), matrix, (degree, degree)) / degree
    blurred = cv2.filter2D(img, -1, kernel)
    cv2.normalize(blurred, blurred, 0, 255, cv2.NORM_MINMAX)
    return np.array(blurred, dtype=np.uint8)


@DATASETS.register(name="CustomLabelDataset")
class CustomLabelDataset(ImageNetDataset):
    """Images listed without labels; the label is made by the transform whose ``label_key`` is given.

    Args:
        image_root: folder the list paths are relative to.
        sample_list_path: the list (one path per line).
        transform_ops: PaddleClas transform list; must hold the op making ``label_key``.
        label_key: ``random_rot90_orientation`` (RandomRot90) or ``blur_image`` (BlurImage).
        delimiter: keep only the first field of each line.
        class_num: when given, must cover the op's labels.
        skip_bad_images / check_images_exist: as :class:`ImageNetDataset`.
    """

    def __init__(self, image_root: str, sample_list_path: str, transform_ops: Optional[List[Any]] = None,
                 label_key: Optional[str] = None, delimiter: Optional[str] = None, class_num: Optional[int] = None,
                 skip_bad_images: bool = False, check_images_exist: bool = True) -> None:
        paddle.io.Dataset.__init__(self)
        if not isinstance(image_root, str) or not os.path.isdir(image_root):
            raise DataError(f"image_root {image_root!r} is not a folder; it must hold the images the list names")
        self.image_root, self.class_num = image_root, class_num
        self.skip_bad_images = bool(skip_bad_images)
        self.transform = build_transforms(transform_ops, "transform_ops")
        makers = {op.label_key: op for _, op in self.transform.ops if isinstance(op, LabelOp)}
        if label_key not in makers:
            raise ConfigError(f"label_key {label_key!r}: no op of transform_ops makes it; "
                              + (f"ops here make {sorted(makers)}" if makers else
                                 "add RandomRot90 (label_key: random_rot90_orientation) or BlurImage "
                                 "(label_key: blur_image)"))
        self.label_op = makers[label_key]
        if class_num is not None and class_num < self.label_op.num_labels:
            raise ConfigError(f"class_num {class_num} is smaller than the {self.label_op.num_labels} labels "
                              f"{type(self.label_op).__name__} makes")
        if not isinstance(sample_list_path, str) or not os.path.isfile(sample_list_path):
            raise DataError(f"sample_list_path {sample_list_path!r} does not exist")
        self.records = []
        with open(sample_list_path, "r", encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                line = text.strip()
                if line:
                    path = line.split(delimiter)[0].strip() if delimiter else line
                    self.records.append(Record(path, UNLABELED, sample_list_path, number))
        problems: List[Problem] = check_records(self.records, image_root, None, check_images_exist)
        if not self.records:
            problems.append(Problem(sample_list_path, 0, "the list names no image"))
        if problems:
            raise DataError(format_problems(problems, f"dataset under image_root {image_root}"))
        self.num_labeled, self.num_unlabeled = len(self.records), 0  # every image gets a made label
        self.num_repeated = count_repeats(self.records, image_root)
        self.labels = np.full(len(self.records), UNLABELED, dtype=np.int64)
        self._init_runtime()
        logger.info("custom-label dataset %s: %d images from %s, labels by %s (%s)", image_root, len(self.records),
                    sample_list_path, type(self.label_op).__name__, label_key)

    def sample(self, index: int) -> Tuple[np.ndarray, np.int64]:
        rec = self.records[index]
        path = self.full_path(index)
        rng = self._rng(index)
        try:
            data: Any = read_bytes(path)
            if not self.transform.decodes:
                data = as_rgb_array(decode_image(data))
            label = UNLABELED
            for _, op in self.transform.ops:
                if op is self.label_op:
                    data, label = op.apply(data, rng)
                else:
                    data = op(data, rng)
            return to_network(data, self.transform), np.int64(label)
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"image {path} (listed at {rec.source}:{rec.line}) cannot be read: {exc}") from exc
        except DataError as exc:
            raise DataError(f"image {path} (listed at {rec.source}:{rec.line}): {exc}") from exc
