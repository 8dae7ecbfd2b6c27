"""A frozen teacher's own input: the student's view, resized and normalised for the teacher.

Config, per frozen member of a DistillationModel (PaddleClas's ``ResizeImage``/``NormalizeImage`` names)::

    Arch.models[N].Teacher.input: {size: [384, 384], mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5],
                                   scale: 1.0/255.0, interpolation: bicubic, allow_upsample: false}

Every key is optional: ``size`` (``[H, W]`` or one int; absent: the student's size), ``mean``/``std``/``scale``
(absent: the student's), ``interpolation`` (``bilinear``, the default, ``bicubic`` or ``nearest``),
``allow_upsample`` (default false; see below).

The teacher never draws a view of its own: it is handed the very batch the student trains on (after the
dataset's transforms and the batch operators, so the same crop, flip, colour draws and mixing), and maps it:

1. undo the student's ``NormalizeImage``, the one in the transform list the views come from
   (``DataLoader.Train.dataset.transform_ops`` in training and cache generation; the eval list in mining and
   in the teacher's evaluation): ``pixel = (x * std_s + mean_s) / scale_s``;
2. resize to ``size`` with ``paddle.nn.functional.interpolate`` (``align_corners: false``);
3. normalise for the teacher: ``(pixel * scale_t - mean_t) / std_t``.

Steps 1 and 3 are one affine map per channel; interpolation weights sum to 1, so the map commutes with step 2
and is applied once, after the resize. A ``size`` larger than :data:`MAX_UPSAMPLE` times the student's view on
a side is refused (the teacher would see interpolated pixels, not detail) unless ``allow_upsample: true``;
views are checked as they come (every new batch shape once), since multi-scale samplers vary them.
"""
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

from ppssld.arch.roles import aligned_list, model_entries
from ppssld.data.transforms import build_transforms
from ppssld.data.transforms.basic import NormalizeImage
from ppssld.data.transforms.core import parse_number
from ppssld.utils.checks import is_finite_number, is_int
from ppssld.utils.config import get, refuse_unknown_keys
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

INPUT_KEYS = ("size", "mean", "std", "scale", "interpolation", "allow_upsample")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
MAX_UPSAMPLE = 2.0  # largest teacher size / student view size per side accepted without allow_upsample
VIEW_SOURCES = {"train": ("DataLoader.Train.dataset.transform_ops",),
                "eval": ("DataLoader.Eval.dataset.transform_ops", "Infer.transforms")}


@dataclass(frozen=True)
class Normalization:
    """``(pixel * scale - mean) / std`` per RGB channel, as ``NormalizeImage`` computes it."""
    scale: float
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    def record(self) -> Dict[str, Any]:
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class InputSpec:
    """A checked ``input`` mapping; None fields take the student's value."""
    size: Optional[Tuple[int, int]]
    mean: Optional[Tuple[float, ...]]
    std: Optional[Tuple[float, ...]]
    scale: Optional[float]
    interpolation: str
    allow_upsample: bool


def _triple(value: Any, key: str, where: str, positive: bool) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3 or not all(is_finite_number(v) for v in value) \
            or (positive and not all(v > 0 for v in value)):
        need = "3 numbers > 0" if positive else "3 numbers"
        raise ConfigError(f"{where}.{key} must be {need} (one per RGB channel), got {value!r}")
    return tuple(float(v) for v in value)


def parse_input(value: Any, where: str) -> InputSpec:
    """Check one ``input`` mapping (module docstring).

    Raises:
        ConfigError: not a mapping, an unknown key (naming the closest), or a bad value (naming the key).
    """
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping like {{size: [384, 384], mean: [...], std: [...]}}, "
                          f"got {value!r}")
    refuse_unknown_keys(value, INPUT_KEYS, where)
    size = value.get("size")
    if is_int(size):
        size = [size, size]
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(is_int(s) and s > 0 for s in size)):
        raise ConfigError(f"{where}.size must be [height, width] (or one int) in pixels, got {value.get('size')!r}")
    scale = value.get("scale")
    if scale is not None:
        scale = parse_number(scale, f"{where}.scale")
        if not is_finite_number(scale) or scale <= 0:
            raise ConfigError(f"{where}.scale must be a number > 0 (e.g. 1.0/255.0), got {value.get('scale')!r}")
    interpolation = value.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"{where}.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    allow = value.get("allow_upsample", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"{where}.allow_upsample must be true or false, got {allow!r}")
    return InputSpec(tuple(size) if size is not None else None, _triple(value.get("mean"), "mean", where, False),
                     _triple(value.get("std"), "std", where, True), scale, interpolation, allow)


def view_ops(config: Dict[str, Any], role: str) -> Tuple[Any, str]:
    """``(transform list, its config place)`` of the views a teacher is fed: ``train`` (training, the cache) or
    ``eval`` (mining, the teacher's evaluation: the eval list, else ``Infer.transforms``)."""
    for place in VIEW_SOURCES[role]:
        ops = get(config, place)
        if ops:
            return ops, place
    return None, VIEW_SOURCES[role][0]


def student_normalization(ops: Any, where: str) -> Normalization:
    """The ``NormalizeImage`` of a transform list (the normalisation a teacher's own input undoes).

    Raises:
        ConfigError: none or several ``NormalizeImage``, or one with ``channel_num: 4``.
    """
    found = [op for _name, op in build_transforms(ops, where).ops if isinstance(op, NormalizeImage)]
    if len(found) != 1:
        raise ConfigError(f"{where} has {len(found)} NormalizeImage ops; a teacher with its own input undoes the "
                          f"student's normalisation, so the views must come from exactly one NormalizeImage")
    op = found[0]
    if op.channel_num != 3:
        raise ConfigError(f"{where}.NormalizeImage.channel_num: {op.channel_num}: a teacher's own input needs "
                          f"3-channel views")
    return Normalization(float(op.scale), tuple(float(v) for v in op.mean.reshape(-1)),
                         tuple(float(v) for v in op.std.reshape(-1)))


class TeacherInput:
    """Maps a batch of student views ``(n, 3, h, w)`` to the teacher's input (module docstring)."""

    def __init__(self, spec: InputSpec, student: Normalization, where: str) -> None:
        self.spec, self.student, self.where = spec, student, where
        scale = spec.scale if spec.scale is not None else student.scale
        mean = np.array(spec.mean if spec.mean is not None else student.mean, np.float64)
        std = np.array(spec.std if spec.std is not None else student.std, np.float64)
        ratio = scale / student.scale
        self.gain = (np.array(student.std) * ratio / std).astype(np.float32)
        self.shift = ((np.array(student.mean) * ratio - mean) / std).astype(np.float32)
        self.teacher = Normalization(float(scale), tuple(mean.tolist()), tuple(std.tolist()))
        self.affine = not (np.all(self.gain == 1.0) and np.all(self.shift == 0.0))
        self.checked: Set[Tuple[int, int]] = set()

    def record(self) -> Dict[str, Any]:
        """What manifests and descriptions record: the teacher's input and the student normalisation undone."""
        return {"size": list(self.spec.size) if self.spec.size else None, "interpolation": self.spec.interpolation,
                "teacher": self.teacher.record(), "student": self.student.record(),
                "allow_upsample": self.spec.allow_upsample}

    def describe(self) -> str:
        size = "x".join(map(str, self.spec.size)) if self.spec.size else "the student's size"
        return (f"input {size} ({self.spec.interpolation}), mean {list(self.teacher.mean)}, "
                f"std {list(self.teacher.std)}")

    def check_view(self, height: int, width: int) -> None:
        """Refuse a ``size`` that upsamples an ``height`` x ``width`` view more than :data:`MAX_UPSAMPLE` per side."""
        if (height, width) in self.checked:
            return
        self.checked.add((height, width))
        if self.spec.size is None or self.spec.allow_upsample:
            return
        factor = max(self.spec.size[0] / height, self.spec.size[1] / width)
        if factor > MAX_UPSAMPLE:
            raise ConfigError(f"{self.where}.size {list(self.spec.size)} upsamples the student's {height}x{width} "
                              f"views {factor:.2f}x per side (more than {MAX_UPSAMPLE:g}x): the teacher would see "
                              f"interpolated pixels, not detail. Set {self.where}.allow_upsample: true to accept "
                              f"it, or a smaller size (or larger student views)")

    def __call__(self, x: paddle.Tensor) -> paddle.Tensor:
        if x.ndim != 4 or int(x.shape[1]) != 3:
            raise ConfigError(f"{self.where}: a teacher's own input needs batches (n, 3, h, w), got {list(x.shape)}")
        height, width = int(x.shape[2]), int(x.shape[3])
        self.check_view(height, width)
        if x.dtype != paddle.float32:
            x = x.astype("float32")
        if self.spec.size is not None and tuple(self.spec.size) != (height, width):
            x = F.interpolate(x, size=list(self.spec.size), mode=self.spec.interpolation, align_corners=False)
        if self.affine:
            x = x * paddle.to_tensor(self.gain.reshape(1, 3, 1, 1)) + paddle.to_tensor(self.shift.reshape(1, 3, 1, 1))
        return x

    def numpy(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`__call__` on a numpy batch (mining, cache generation)."""
        return self(paddle.to_tensor(np.ascontiguousarray(batch, dtype=np.float32))).numpy()


def member_specs(arch: Dict[str, Any]) -> List[Tuple[int, str, InputSpec]]:
    """``[(index, name, spec)]`` of every ``Arch.models`` entry with an ``input`` (checked)."""
    if not isinstance(arch, dict) or arch.get("name") != "DistillationModel":
        return []
    found = []
    for i, (name, entry) in enumerate(model_entries(arch)):
        if entry.get("input") is not None:
            found.append((i, name, parse_input(entry["input"], f"Arch.models[{i}].{name}.input")))
    return found


def input_for(config: Dict[str, Any], name: str, role: str) -> Optional[TeacherInput]:
    """The input preparation of frozen model ``name`` for views of ``role`` (``train``/``eval``), or None."""
    for i, member, spec in member_specs(config.get("Arch") or {}):
        if member == name:
            ops, where = view_ops(config, role)
            return TeacherInput(spec, student_normalization(ops, where), f"Arch.models[{i}].{name}.input")
    return None


def check_teacher_inputs(config: Dict[str, Any]) -> None:
    """The config-time checks of every teacher's ``input``: keys and values, frozen members only, and one
    student normalisation (train and eval views normalised alike, since one teacher sees both).

    Raises:
        ConfigError: naming the key.
    """
    arch = config.get("Arch") or {}
    specs = member_specs(arch)
    if not specs:
        return
    frozen = aligned_list(arch, "freeze_params_list", len(model_entries(arch)))
    for i, name, _spec in specs:
        if not frozen[i]:
            raise ConfigError(f"Arch.models[{i}].{name}.input: only a frozen teacher takes its own input (the student "
                              f"trains on the views the transforms make); remove it or freeze {name}")
    norms = {}
    for role in ("train", "eval"):
        ops, where = view_ops(config, role)
        if ops:
            norms[where] = student_normalization(ops, where)
    if len(set(norms.values())) > 1:
        (a, na), (b, nb) = list(norms.items())[:2]
        raise ConfigError(f"{a} and {b} normalise differently ({na.record()} vs {nb.record()}); a teacher with its "
                          f"own input undoes one student normalisation for both: make their NormalizeImage equal")


def attach_teacher_inputs(model: Any, config: Dict[str, Any]) -> None:
    """Hand each frozen member with an ``input`` its preparation for training views (``DistillationModel``)."""
    if getattr(model, "input_members", None):
        check_teacher_inputs(config)
    for name in getattr(model, "input_members", []):
        prepare = input_for(config, name, "train")
        if prepare is not None:
            model.set_member_input(name, prepare)
            logger.info("teacher %s: its own %s, from the student's views (same crop and draws)", name,
                        prepare.describe())
