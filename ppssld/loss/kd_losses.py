"""PaddleClas's further distillation losses as config losses: DKD, DIST, WSL, SKD, distance, RKD.

Names and parameters are PaddleClas's, so its ``Loss.Train`` entries build unchanged.

Labels: DKD, WSL and SKD read the hard label of each row. PaddleClas uses the teacher's
argmax when no label is passed, or always with ``use_target_as_gt: True``; ppssld does the
same. A row labelled ``-1`` (unlabeled, as in SSLD's label-free data) is *excluded* from
every label-dependent term (DKD and WSL: the whole row; SKD: its hard-label part), and the
first batch where that happens is logged; set ``use_target_as_gt: True`` to score those rows
against the teacher's argmax instead.
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import paddle

from ppssld.loss import kd_functional as KF
from ppssld.loss.functional import labeled_mask
from ppssld.loss.losses import Outputs, PairLoss, check_temperature, select_output
from ppssld.utils import device_checks
from ppssld.utils.checks import is_int, is_number
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import LOSSES

logger = logging.getLogger(__name__)

Pairs = Optional[Sequence[Sequence[str]]]
_told: set = set()


def _number(value: Any, what: str, low: float = 0.0, high: Optional[float] = None) -> float:
    if not is_number(value) or value < low or (
            high is not None and value > high):
        span = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ConfigError(f"{what} must be a number {span}, got {value!r}")
    return float(value)


class LabeledPairLoss(PairLoss):
    """A pair loss that also reads hard labels (teacher argmax when absent or asked for)."""

    def __init__(self, weight: float = 1.0, model_name_pairs: Pairs = None, key: Optional[str] = None,
                 use_target_as_gt: bool = False) -> None:
        super().__init__(weight, model_name_pairs, key)
        if not isinstance(use_target_as_gt, bool):
            raise ConfigError(f"use_target_as_gt must be true or false, got {use_target_as_gt!r}")
        self.use_target_as_gt = use_target_as_gt
        # hard labels of a Mixup/Cutmix batch are a mix: only the teacher-argmax variant can train on it
        self.accepts_mixed_labels = use_target_as_gt

    def targets(self, teacher: paddle.Tensor, labels: Optional[paddle.Tensor]) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """``(class index [N], counted-row mask [N])`` for one pair."""
        if labels is None or self.use_target_as_gt:
            index = teacher.argmax(axis=-1).astype("int64")
            return index, paddle.ones([teacher.shape[0]], dtype="float32")
        mask, index = labeled_mask(labels, teacher.shape[-1])
        if self.where in _told:
            return index, mask
        if device_checks.deferring():  # the training loop reads the flag at its print step
            device_checks.check(f"unlabeled rows in {self.where or self.config_name}", mask <= 0,
                                f"{self.where or self.config_name}: some rows are unlabeled (-1) and excluded from "
                                f"its label-dependent part; set use_target_as_gt: True to use the teacher's argmax "
                                f"for every row")
            return index, mask
        skipped = int(mask.shape[0] - mask.sum())
        if skipped:
            _told.add(self.where)
            logger.warning("%s: %d of %d rows are unlabeled (-1) and excluded from its label-dependent part "
                           "(logged once); set use_target_as_gt: True to use the teacher's argmax for every row",
                           self.where or self.config_name, skipped, int(mask.shape[0]))
        return index, mask

    def labeled_value(self, student: paddle.Tensor, teacher: paddle.Tensor, index: paddle.Tensor,
                      mask: paddle.Tensor) -> paddle.Tensor:
        """The loss for one pair (scalar)."""
        raise NotImplementedError

    def pair_part(self, student: paddle.Tensor, teacher: paddle.Tensor,
                  labels: Optional[paddle.Tensor]) -> paddle.Tensor:
        index, mask = self.targets(teacher, labels)
        return self.labeled_value(student, teacher, index, mask)


@LOSSES.register()
class DistillationDKDLoss(LabeledPairLoss):
    """Decoupled KD: ``T^2 * (alpha * TCKD + beta * NCKD)``, PaddleClas's ``DistillationDKDLoss``.

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        key: pick ``output[key]`` when a model returns a dict.
        temperature: softmax temperature T.
        alpha: weight of the target-class part (TCKD).
        beta: weight of the non-target part (NCKD).
        use_target_as_gt: use the teacher's argmax as the target class for every row.
        name: PaddleClas's part-name prefix (accepted; parts are named by ppssld's rule).
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Pairs = None, key: Optional[str] = None,
                 temperature: float = 1.0, alpha: float = 1.0, beta: float = 1.0,
                 use_target_as_gt: bool = False, name: str = "loss_dkd") -> None:
        super().__init__(weight, model_name_pairs, key, use_target_as_gt)
        self.temperature = check_temperature(temperature)
        self.alpha, self.beta = _number(alpha, "alpha"), _number(beta, "beta")

    def labeled_value(self, student, teacher, index, mask):
        return KF.dkd(student, teacher, index, mask, self.alpha, self.beta, self.temperature)


@LOSSES.register()
class DistillationWSLLoss(LabeledPairLoss):
    """Weighted soft labels, PaddleClas's ``DistillationWSLLoss``.

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        key: pick ``output[key]`` when a model returns a dict.
        temperature: softmax temperature of the soft part.
        use_target_as_gt: use the teacher's argmax as the label of every row.
        name: PaddleClas's part-name prefix (accepted).
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Pairs = None, key: Optional[str] = None,
                 temperature: float = 2.0, use_target_as_gt: bool = False, name: str = "wsl_loss") -> None:
        super().__init__(weight, model_name_pairs, key, use_target_as_gt)
        self.temperature = check_temperature(temperature)

    def labeled_value(self, student, teacher, index, mask):
        return KF.wsl(student, teacher, index, mask, self.temperature)


@LOSSES.register()
class DistillationSKDLoss(LabeledPairLoss):
    """Spherical KD, PaddleClas's ``DistillationSKDLoss`` (it includes its own hard-label CE).

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        key: pick ``output[key]`` when a model returns a dict.
        temperature: softmax temperature of the soft part.
        multiplier: scale of the standardised logits.
        alpha: share of the soft part; ``1 - alpha`` goes to the hard-label CE.
        use_target_as_gt: use the teacher's argmax as the label of every row.
        name: PaddleClas's part-name prefix (accepted).
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Pairs = None, key: Optional[str] = None,
                 temperature: float = 1.0, multiplier: float = 2.0, alpha: float = 0.9,
                 use_target_as_gt: bool = False, name: str = "skd_loss") -> None:
        super().__init__(weight, model_name_pairs, key, use_target_as_gt)
        self.temperature = check_temperature(temperature)
        self.multiplier = _number(multiplier, "multiplier")
        self.alpha = _number(alpha, "alpha", 0.0, 1.0)

    def labeled_value(self, student, teacher, index, mask):
        return KF.skd(student, teacher, index, mask, self.temperature, self.multiplier, self.alpha)


@LOSSES.register()
class DistillationDISTLoss(PairLoss):
    """DIST (inter- and intra-class Pearson correlation), PaddleClas's ``DistillationDISTLoss``.

    Uses no labels: every row counts.

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        key: pick ``output[key]`` when a model returns a dict.
        beta: weight of the inter-class (per-sample) relation.
        gamma: weight of the intra-class (per-class, across the batch) relation.
        name: PaddleClas's part-name prefix (accepted).
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Pairs = None, key: Optional[str] = None,
                 beta: float = 1.0, gamma: float = 1.0, name: str = "loss_dist") -> None:
        super().__init__(weight, model_name_pairs, key)
        self.beta, self.gamma = _number(beta, "beta"), _number(gamma, "gamma")

    def pair_value(self, student, teacher):
        return KF.dist(student, teacher, self.beta, self.gamma)


@LOSSES.register()
class DistillationDistanceLoss(PairLoss):
    """L1 / L2 (mean squared) / smooth-L1 between two models' outputs, PaddleClas's loss of that name.

    Often applied to an intermediate feature (``key: blocks5`` with ``return_patterns``).

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        mode: ``l1``, ``l2`` or ``smooth_l1``.
        act: ``softmax``, ``sigmoid`` or null, applied to both outputs first.
        key: pick ``output[key]`` when a model returns a dict.
        reduction: ``mean`` or ``sum`` over elements.
        delta: smooth-L1's threshold.
        name: PaddleClas's part-name prefix (accepted).
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Pairs = None, mode: str = "l2",
                 act: Optional[str] = None, key: Optional[str] = None, reduction: str = "mean",
                 delta: float = 1.0, name: str = "loss_") -> None:
        super().__init__(weight, model_name_pairs, key)
        if mode not in ("l1", "l2", "smooth_l1"):
            raise ConfigError(f"mode must be l1, l2 or smooth_l1, got {mode!r}")
        if act not in (None, "softmax", "sigmoid"):
            raise ConfigError(f"act must be softmax, sigmoid or null, got {act!r}")
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction must be 'mean' or 'sum' (a scalar loss is needed), got {reduction!r}")
        self.mode, self.act, self.reduction = mode, act, reduction
        self.delta = _number(delta, "delta")

    def pair_value(self, student, teacher):
        if self.act == "softmax":
            student, teacher = paddle.nn.functional.softmax(student, -1), paddle.nn.functional.softmax(teacher, -1)
        elif self.act == "sigmoid":
            student, teacher = paddle.nn.functional.sigmoid(student), paddle.nn.functional.sigmoid(teacher)
        return KF.distance(student, teacher, self.mode, self.reduction, self.delta)


def _key_list(value: Any, what: str) -> List[Optional[str]]:
    if value is None or value == []:
        return [None]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of output keys, got {value!r}")
    return list(value)


@LOSSES.register()
class DistillationRKDLoss(PairLoss):
    """Relational KD: distance and angle terms, PaddleClas's ``DistillationRKDLoss``.

    Parts ``<name>_angle_<i>_<S>_<T>`` and ``<name>_dist_<i>_<S>_<T>`` for each key pair.

    Args:
        weight: multiplier in the total loss.
        target_size: average-pool 4-D features to this size first (null: keep).
        model_name_pairs: ``[[student, teacher], ...]``.
        student_keepkeys / teacher_keepkeys: output keys compared pairwise; empty: the
            models' outputs (or ``output[key]``).
        key: output key used when the keepkeys are empty.
    """

    def __init__(self, weight: float = 1.0, target_size: Optional[int] = None, model_name_pairs: Pairs = None,
                 student_keepkeys: Optional[Sequence[str]] = None, teacher_keepkeys: Optional[Sequence[str]] = None,
                 key: Optional[str] = None) -> None:
        super().__init__(weight, model_name_pairs, key)
        self.student_keys = _key_list(student_keepkeys, "student_keepkeys")
        self.teacher_keys = _key_list(teacher_keepkeys, "teacher_keepkeys")
        if len(student_keepkeys or []) != len(teacher_keepkeys or []):
            raise ConfigError(f"student_keepkeys and teacher_keepkeys must have the same length, got "
                              f"{student_keepkeys!r} and {teacher_keepkeys!r}")
        if target_size is not None and (not is_int(target_size)
                                        or target_size < 1):
            raise ConfigError(f"target_size must be a positive integer or null, got {target_size!r}")
        self.target_size = target_size

    def logit_pairs(self) -> List[Tuple[str, str]]:
        """None: RKD compares distances and angles within each model's batch, not the outputs themselves."""
        return []

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        parts = {}
        for first, second in self.model_name_pairs:
            for i, (s_key, t_key) in enumerate(zip(self.student_keys, self.teacher_keys)):
                s = select_output(outputs, first, s_key or self.key, self.where)
                t = select_output(outputs, second, t_key or self.key, self.where)
                parts[f"{self.config_name}_angle_{i}_{first}_{second}"] = KF.rkd_angle(s, t, self.target_size)
                parts[f"{self.config_name}_dist_{i}_{first}_{second}"] = KF.rkd_distance(s, t, self.target_size)
        return parts
