"""Batch operators (PaddleClas ``DataLoader.Train.dataset.batch_transform_ops``): Mixup, Cutmix, OpSampler.

They run once per training batch in the trainer, on the image tensor, before the model: in
distillation the teacher and the student see the same mixed images (function matching, Beyer et
al. 2022), the soft losses compare their outputs on them, and the hard-label losses read the
:class:`ppssld.data.batch.mixed_labels.MixedLabels` (``lam * CE(a) + (1 - lam) * CE(b)``; unlabeled images:
see :mod:`ppssld.loss.mixed`). Train metrics skip mixed batches.

Every random draw comes from a generator keyed to (seed, epoch, step, rank), so a resumed run
mixes exactly as an uninterrupted one. PaddleClas's keys and defaults: ``MixupOperator: {alpha: 1.0}``,
``CutmixOperator: {alpha: 0.2}``, ``OpSampler: {MixupOperator: {alpha, prob}, CutmixOperator: {alpha,
prob}}`` (the probabilities sum to at most 1; the rest of the time the batch is left as it is).
``class_num``, which PaddleClas injects, is accepted and ignored (the targets stay label pairs).
"""
import logging
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import paddle

from ppssld.data.transforms import parse_number
from ppssld.data.batch.mixed_labels import MixedLabels
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import BATCH_OPS, component_entries

logger = logging.getLogger(__name__)

Labels = Union[paddle.Tensor, MixedLabels]
RNG_TAG = 0xB47C  # separates this generator's stream from the sampler's and the dataset's
NOT_SUPPORTED = {"FmixOperator": "FMix", "MixupCutmixHybrid": "timm-style per-element Mixup/Cutmix"}


def _alpha(value: Any, name: str) -> float:
    alpha = parse_number(value, name)
    if alpha <= 0:
        raise ConfigError(f"{name} must be > 0 (the Beta(alpha, alpha) parameter), got {value!r}")
    return alpha


def _flat_labels(labels: paddle.Tensor) -> paddle.Tensor:
    if isinstance(labels, MixedLabels):
        raise ConfigError("a batch can be mixed only once: list one batch operator (use OpSampler to choose "
                          "between several)")
    return labels.reshape([-1]).astype("int64")


class BatchOp:
    """A batch operator: ``(images [N,C,H,W], labels [N], rng) -> (images, labels or MixedLabels)``."""

    def __call__(self, images: paddle.Tensor, labels: Labels,
                 rng: np.random.Generator) -> Tuple[paddle.Tensor, Labels]:
        raise NotImplementedError


@BATCH_OPS.register(name="MixupOperator")
class MixupOperator(BatchOp):
    """Mixup (Zhang et al. 2018): ``lam * x + (1 - lam) * x[perm]``, one ``lam ~ Beta(alpha, alpha)`` a batch."""

    def __init__(self, alpha: Any = 1.0, class_num: Optional[int] = None) -> None:
        self.alpha = _alpha(alpha, "alpha")

    def __call__(self, images: paddle.Tensor, labels: Labels,
                 rng: np.random.Generator) -> Tuple[paddle.Tensor, Labels]:
        labels = _flat_labels(labels)
        n = int(images.shape[0])
        perm = rng.permutation(n)
        lam = float(rng.beta(self.alpha, self.alpha))
        index = paddle.to_tensor(perm, dtype="int64")
        mixed = images * lam + paddle.gather(images, index) * (1.0 - lam)
        return mixed, MixedLabels(labels, paddle.gather(labels, index), paddle.full([n], lam, "float32"))


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """The pasted box ``(top, bottom, left, right)`` for a drawn ``lam``: sides ``int(H * sqrt(1 - lam))`` and
    ``int(W * sqrt(1 - lam))`` around a uniform centre, clipped to the image (Yun et al. 2019)."""
    cut = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    left, right = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return top, bottom, left, right


@BATCH_OPS.register(name="CutmixOperator")
class CutmixOperator(BatchOp):
    """CutMix: paste a box of ``x[perm]`` into ``x``; ``lam`` becomes the kept area share (one box a batch)."""

    def __init__(self, alpha: Any = 0.2, class_num: Optional[int] = None) -> None:
        self.alpha = _alpha(alpha, "alpha")

    def __call__(self, images: paddle.Tensor, labels: Labels,
                 rng: np.random.Generator) -> Tuple[paddle.Tensor, Labels]:
        labels = _flat_labels(labels)
        n, height, width = int(images.shape[0]), int(images.shape[2]), int(images.shape[3])
        perm = rng.permutation(n)
        lam = float(rng.beta(self.alpha, self.alpha))
        top, bottom, left, right = cutmix_box(height, width, lam, rng)
        mask = np.zeros((1, 1, height, width), dtype=np.float32)
        mask[..., top:bottom, left:right] = 1.0
        box = paddle.to_tensor(mask).astype(images.dtype)
        index = paddle.to_tensor(perm, dtype="int64")
        mixed = images * (1.0 - box) + paddle.gather(images, index) * box
        kept = 1.0 - (bottom - top) * (right - left) / float(height * width)
        return mixed, MixedLabels(labels, paddle.gather(labels, index), paddle.full([n], kept, "float32"))


@BATCH_OPS.register(name="OpSampler")
class OpSampler(BatchOp):
    """Apply one of its operators, each with its ``prob`` (summing to <= 1); otherwise leave the batch as it is.

    Config: ``OpSampler: {MixupOperator: {alpha: 0.8, prob: 0.5}, CutmixOperator: {alpha: 1.0, prob: 0.5}}``.
    """

    def __init__(self, class_num: Optional[int] = None, **ops: Any) -> None:
        self.ops: List[Tuple[BatchOp, float]] = []
        total = 0.0
        for name, params in ops.items():
            where = f"OpSampler.{name}"
            if name == "OpSampler":
                raise ConfigError(f"{where}: an OpSampler cannot hold another OpSampler")
            if not isinstance(params, dict) or "prob" not in params:
                raise ConfigError(f"{where} needs a mapping with 'prob' (its share of the batches), got {params!r}")
            params = dict(params)
            prob = parse_number(params.pop("prob"), f"{where}.prob")
            if not 0 <= prob <= 1:
                raise ConfigError(f"{where}.prob must lie in [0, 1], got {prob!r}")
            total += prob
            self.ops.append((_build_one(name, params, where), prob))
        if not self.ops:
            raise ConfigError("OpSampler lists no operator; give e.g. MixupOperator: {alpha: 0.8, prob: 0.5}")
        if total > 1 + 1e-9:
            raise ConfigError(f"OpSampler: the probabilities sum to {total:g}; they must sum to at most 1")
        self.cumulative = np.cumsum([p for _, p in self.ops])

    def __call__(self, images: paddle.Tensor, labels: Labels,
                 rng: np.random.Generator) -> Tuple[paddle.Tensor, Labels]:
        draw = float(rng.random())
        chosen = int(np.searchsorted(self.cumulative, draw, side="right"))
        if chosen >= len(self.ops):
            return images, labels
        return self.ops[chosen][0](images, labels, rng)


def _build_one(name: str, params: Dict[str, Any], where: str) -> BatchOp:
    if name not in BATCH_OPS and name in NOT_SUPPORTED:
        raise ConfigError(f"{where}: PaddleClas batch operator {name!r} ({NOT_SUPPORTED[name]}) is not implemented "
                          f"in ppssld; supported: {', '.join(BATCH_OPS.names())}")
    try:
        return BATCH_OPS.build(name, params, where)
    except ConfigError as exc:
        if str(exc).startswith(("unknown batch operator", "batch operator ", where)):
            raise
        raise ConfigError(f"{where}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


class BatchTransform:
    """The configured batch operator, with its (seed, epoch, step, rank) generator.

    Args:
        op: the operator.
        seed: ``Global.seed``.
        rank: this process's rank (ranks mix their own batches differently).
    """

    def __init__(self, op: BatchOp, seed: int = 0, rank: int = 0) -> None:
        self.op, self.seed, self.rank = op, int(seed), int(rank)

    def rng(self, epoch: int, step: int) -> np.random.Generator:
        """The generator of one batch."""
        return np.random.default_rng([self.seed & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(step) & 0xFFFFFFFF,
                                      self.rank, RNG_TAG])

    def __call__(self, images: paddle.Tensor, labels: paddle.Tensor, epoch: int,
                 step: int) -> Tuple[paddle.Tensor, Labels]:
        """Mix batch ``step`` of ``epoch``; returns ``(images, labels)`` or ``(mixed images, MixedLabels)``."""
        return self.op(images, labels, self.rng(epoch, step))


def build_batch_transform(cfg_list: Any, seed: int = 0, rank: int = 0,
                          where: str = "DataLoader.Train.dataset.batch_transform_ops") -> Optional[BatchTransform]:
    """Build the batch transform of a ``batch_transform_ops`` list (None when the list is absent).

    Raises:
        ConfigError: not a one-entry list, unknown operator or parameter, bad value.
    """
    if cfg_list is None:
        return None
    entries = component_entries(cfg_list, where, "[{MixupOperator: {alpha: 0.2}}]")
    if len(entries) != 1:
        raise ConfigError(f"{where} lists {len(entries)} operators; a batch is mixed once: list one, or use "
                          f"OpSampler to choose between several")
    name, params = entries[0]
    return BatchTransform(_build_one(name, params, f"{where}[0].{name}"), seed, rank)


def validate_batch_transform(cfg_list: Any, where: str = "DataLoader.Train.dataset.batch_transform_ops") -> None:
    """Check a ``batch_transform_ops`` list without keeping anything.

    Raises:
        ConfigError: as :func:`build_batch_transform`.
    """
    build_batch_transform(cfg_list, where=where)
