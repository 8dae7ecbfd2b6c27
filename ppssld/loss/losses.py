"""Config-facing losses (``Loss.Train`` / ``Loss.Eval`` entries), registered in LOSSES.

Each loss reads model outputs (a dict ``name -> logits`` from DistillationModel, or a
plain logits Tensor) and returns its named, *unweighted* parts; :class:`CombinedLoss`
applies ``weight``. Part names are ``<ConfigName>_<Student>_<Teacher>`` for pair losses
and ``<ConfigName>_<Model>`` for ground-truth losses.

Soft losses (pairs) use every row, unlabeled ones included; hard-label losses skip
rows whose label is ``-1``. On a batch mixed by a batch operator the labels are
:class:`ppssld.loss.mixed.MixedLabels`; only losses with ``accepts_mixed_labels`` take them.
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import paddle
import paddle.nn as nn

from ppssld.arch.roles import student_output_name
from ppssld.loss import functional as LF
from ppssld.loss.mixed import MixedLabels, mixed_label_ce
from ppssld.utils.checks import is_number
from ppssld.utils.errors import ConfigError, did_you_mean
from ppssld.utils.registry import LOSSES

logger = logging.getLogger(__name__)

Outputs = Union[paddle.Tensor, Dict[str, Any]]
DEFAULT_PAIRS = [["Student", "Teacher"]]
DEFAULT_GT_MODELS = ["Student"]


def _check_weight(weight: Any) -> float:
    if not is_number(weight) or weight < 0:
        raise ConfigError(f"weight must be a number >= 0, got {weight!r}")
    return float(weight)


def check_temperature(value: Any) -> float:
    if not is_number(value) or value <= 0:
        raise ConfigError(f"temperature must be a number > 0, got {value!r}")
    return float(value)


def check_epsilon(epsilon: Any) -> Optional[float]:
    if epsilon is None or epsilon == 0:
        return None
    if not is_number(epsilon) or not 0 < epsilon < 1:
        raise ConfigError(f"epsilon (label smoothing) must be in (0, 1) or null, got {epsilon!r}")
    return float(epsilon)


def select_output(outputs: Outputs, name: str, key: Optional[str], where: str = "") -> paddle.Tensor:
    """Pick model ``name``'s logits from ``outputs`` (then ``[key]`` if the output is a dict).

    A dict output without ``key`` gives its ``logits`` entry (a backbone with ``return_patterns``).

    ``key: logits`` on a model that returns a bare Tensor is accepted as a no-op, so
    PaddleClas configs written for dict-returning models keep working.
    """
    at = f" ({where})" if where else ""
    if not isinstance(outputs, dict):
        raise ConfigError(f"loss{at} refers to model {name!r} but the model output is a single Tensor, "
                          f"not a dict of named models; use CELoss without model_names for a plain model")
    if name not in outputs:
        raise ConfigError(f"loss{at} refers to model {name!r}, which is not among the model outputs "
                          f"{sorted(outputs)}.{did_you_mean(name, outputs)}")
    out = outputs[name]
    if key is not None:
        if isinstance(out, dict):
            if key not in out:
                raise ConfigError(f"loss{at}: output of {name!r} has no key {key!r}; keys: {sorted(out)}")
            out = out[key]
        elif key != "logits":
            raise ConfigError(f"loss{at}: key {key!r} given but model {name!r} returns a Tensor")
    if isinstance(out, dict):
        if "logits" in out:  # a backbone with return_patterns: its logits, as PaddleClas's losses read them
            return out["logits"]
        raise ConfigError(f"loss{at}: output of {name!r} is a dict {sorted(out)}; set 'key' to pick the logits")
    return out


class ConfigLoss(nn.Layer):
    """Base class: holds ``weight``, the config name and the config location.

    ``accepts_mixed_labels``: the loss works on batches mixed by Mixup / Cutmix (it ignores the
    labels, or reads :class:`MixedLabels`).
    """
    accepts_mixed_labels = False

    def __init__(self, weight: float = 1.0, key: Optional[str] = None) -> None:
        super().__init__()
        self.weight = _check_weight(weight)
        self.key = key
        self.config_name = type(self).__name__
        self.where = ""

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        """Return ``{part name: unweighted scalar}``."""
        raise NotImplementedError

    def logit_pairs(self) -> List[Tuple[str, str]]:
        """The pairs of models whose logits this loss compares class by class (they must have the same
        class count); none for a loss on ground truth or features."""
        return []


def check_model_names(names: Any) -> List[str]:
    """``names`` as a list, refusing anything but a non-empty list of model names."""
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"model_names must be a non-empty list of model names, got {names!r}")
    return list(names)


class PairLoss(ConfigLoss):
    """A divergence between two named models' outputs, for each pair in ``model_name_pairs``."""
    accepts_mixed_labels = True

    def __init__(self, weight: float = 1.0, model_name_pairs: Optional[Sequence[Sequence[str]]] = None,
                 key: Optional[str] = None) -> None:
        super().__init__(weight, key)
        pairs = DEFAULT_PAIRS if model_name_pairs is None else model_name_pairs
        if not isinstance(pairs, (list, tuple)) or not pairs or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(n, str) for n in p) for p in pairs):
            raise ConfigError(f"model_name_pairs must be a non-empty list of [student, teacher] name pairs, "
                              f"e.g. [[Student, Teacher]], got {model_name_pairs!r}")
        self.model_name_pairs = [list(p) for p in pairs]

    def logit_pairs(self) -> List[Tuple[str, str]]:
        """Every pair, when ``key`` picks the logits (null or ``logits``)."""
        return [(a, b) for a, b in self.model_name_pairs] if self.key in (None, "logits") else []

    def pair_value(self, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
        """The divergence for one pair (scalar)."""
        raise NotImplementedError

    def pair_part(self, student: paddle.Tensor, teacher: paddle.Tensor,
                  labels: Optional[paddle.Tensor]) -> paddle.Tensor:
        """One pair's part of the loss; a loss that also reads hard labels overrides this."""
        return self.pair_value(student, teacher)

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        parts = {}
        for first, second in self.model_name_pairs:
            a = select_output(outputs, first, self.key, self.where)
            b = select_output(outputs, second, self.key, self.where)
            parts[f"{self.config_name}_{first}_{second}"] = self.pair_part(a, b, labels)
        return parts


@LOSSES.register()
class JSDivLoss(PairLoss):
    """True Jensen-Shannon divergence between the two softmaxes (nats, in [0, ln 2]).

    Near agreement its gradient is about 1/4 of KL's or symmetric KL's: scale ``weight``
    (e.g. 4.0) to train at a comparable effective learning rate.

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        temperature: divides both logits before the softmax (no T^2 factor).
        key: pick ``output[key]`` when a model returns a dict.
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Optional[Sequence[Sequence[str]]] = None,
                 temperature: float = 1.0, key: Optional[str] = None) -> None:
        super().__init__(weight, model_name_pairs, key)
        self.temperature = check_temperature(temperature)

    def pair_value(self, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
        return LF.js_divergence(student, teacher, self.temperature)


@LOSSES.register()
class SymmetricKLLoss(PairLoss):
    """``(KL(p||q) + KL(q||p)) / 2`` between the two softmaxes, exact (no epsilon).

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        temperature: divides both logits before the softmax (no T^2 factor).
        key: pick ``output[key]`` when a model returns a dict.
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Optional[Sequence[Sequence[str]]] = None,
                 temperature: float = 1.0, key: Optional[str] = None) -> None:
        super().__init__(weight, model_name_pairs, key)
        self.temperature = check_temperature(temperature)

    def pair_value(self, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
        return LF.symmetric_kl(student, teacher, self.temperature)


@LOSSES.register(aliases=["DistillationKLDivLoss"])
class KLDivLoss(PairLoss):
    """Hinton KD: ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over rows.

    Same value as PaddleClas ``KLDivLoss`` / ``DistillationKLDivLoss`` (default T = 4).

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        temperature: softmax temperature T.
        key: pick ``output[key]`` when a model returns a dict.
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Optional[Sequence[Sequence[str]]] = None,
                 temperature: float = 4.0, key: Optional[str] = None) -> None:
        super().__init__(weight, model_name_pairs, key)
        self.temperature = check_temperature(temperature)

    def pair_value(self, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
        return LF.kl_divergence(student, teacher, self.temperature)


@LOSSES.register()
class DistillationDMLLoss(PairLoss):
    """PaddleClas ``DistillationDMLLoss``: its symmetric KL, value for value.

    PaddleClas multiplies each element by the class count C and, by default, takes the
    mean over all ``N*C`` elements, so C cancels and the value is the per-row symmetric
    KL averaged over rows; ``sum_across_class_dim: True`` sums over classes instead,
    giving C times that. PaddleClas's ``log(p + 1e-12)`` is kept (computed stably), so
    values differ from :class:`SymmetricKLLoss` only where a probability is below ~1e-12.

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        act: ``softmax`` (default), ``sigmoid`` (element-wise) or null (inputs already
            probabilities).
        sum_across_class_dim: PaddleClas's reduction flag (see above).
        weight_ratio: PaddleClas's multi-label weighting: each element weighted as in
            ``MultiLabelLoss.weight_ratio`` (labels ``[N, 2, C]`` from a MultiLabelDataset with
            ``label_ratio: True``); unknown (-1) label entries, hence unlabeled rows, are excluded.
        key: pick ``output[key]`` when a model returns a dict.
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Optional[Sequence[Sequence[str]]] = None,
                 act: Optional[str] = "softmax", sum_across_class_dim: bool = False,
                 weight_ratio: bool = False, key: Optional[str] = None) -> None:
        super().__init__(weight, model_name_pairs, key)
        if act not in ("softmax", "sigmoid", None):
            raise ConfigError(f"act must be softmax, sigmoid or null, got {act!r}")
        self.act = act
        self.sum_across_class_dim = bool(sum_across_class_dim)
        self.weight_ratio = bool(weight_ratio)
        self.accepts_mixed_labels = not self.weight_ratio  # weight_ratio reads multi-label targets
        self._element_weight: Optional[paddle.Tensor] = None

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        if not self.weight_ratio:
            return super().forward(outputs, labels)
        from ppssld.loss.multilabel import ratio_weight

        first = select_output(outputs, self.model_name_pairs[0][0], self.key, self.where)
        try:
            self._element_weight = ratio_weight(require_labels(labels, self.where or self.config_name),
                                                first.shape[-1])
        except ValueError as exc:
            raise ConfigError(f"{self.where or self.config_name}: {exc}") from exc
        try:
            return super().forward(outputs, labels)
        finally:
            self._element_weight = None

    def pair_value(self, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
        return LF.paddleclas_dml(student, teacher, self.act, self.sum_across_class_dim,
                                 weight=self._element_weight)


@LOSSES.register(aliases=["SoftTargetCELoss"])
class DistillationCELoss(PairLoss):
    """Soft-target cross-entropy ``-sum softmax(teacher) * log_softmax(student)``, mean over rows.

    Same value as PaddleClas ``DistillationCELoss`` without ``epsilon``.

    Args:
        weight: multiplier in the total loss.
        model_name_pairs: ``[[student, teacher], ...]``.
        epsilon: accepted for PaddleClas compatibility; only null is supported (PaddleClas
            would smooth the teacher's raw logits, which is not a distribution).
        key: pick ``output[key]`` when a model returns a dict.
    """

    def __init__(self, weight: float = 1.0, model_name_pairs: Optional[Sequence[Sequence[str]]] = None,
                 epsilon: Optional[float] = None, key: Optional[str] = None) -> None:
        super().__init__(weight, model_name_pairs, key)
        if epsilon is not None:
            raise ConfigError("DistillationCELoss.epsilon is not supported (PaddleClas applies label smoothing "
                              "to the teacher's raw logits); remove it")

    def pair_value(self, student: paddle.Tensor, teacher: paddle.Tensor) -> paddle.Tensor:
        return LF.soft_target_ce(student, teacher)


def require_labels(labels: Optional[paddle.Tensor], where: str) -> paddle.Tensor:
    if labels is None:
        raise ValueError(f"hard-label loss {where} needs labels, got None")
    return labels


def hard_ce(logits: paddle.Tensor, labels: Any, epsilon: Optional[float],
             reduction: str = "mean") -> paddle.Tensor:
    """Hard-label CE on int labels, or PaddleClas's mixed-target CE on :class:`MixedLabels`."""
    if isinstance(labels, MixedLabels):
        return mixed_label_ce(logits, labels, epsilon, reduction)
    return LF.hard_label_ce(logits, labels, epsilon, reduction)


@LOSSES.register()
class DistillationGTCELoss(ConfigLoss):
    """Hard-label cross-entropy for each named model; rows labelled ``-1`` are skipped.

    On a mixed batch: ``lam * CE(a) + (1 - lam) * CE(b)`` (:mod:`ppssld.loss.mixed`).

    Args:
        weight: multiplier in the total loss.
        model_names: models to supervise (default ``[Student]``).
        epsilon: label smoothing in (0, 1), or null.
        key: pick ``output[key]`` when a model returns a dict.
    """

    accepts_mixed_labels = True

    def __init__(self, weight: float = 1.0, model_names: Optional[Sequence[str]] = None,
                 epsilon: Optional[float] = None, key: Optional[str] = None) -> None:
        super().__init__(weight, key)
        self.model_names = check_model_names(DEFAULT_GT_MODELS if model_names is None else model_names)
        self.epsilon = check_epsilon(epsilon)

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        labels = require_labels(labels, self.where or self.config_name)
        return {f"{self.config_name}_{name}": hard_ce(
            select_output(outputs, name, self.key, self.where), labels, self.epsilon)
            for name in self.model_names}


@LOSSES.register()
class CELoss(ConfigLoss):
    """Hard-label cross-entropy on a plain model's Tensor or on chosen entries of a dict.

    With a Tensor output the part is named ``CELoss``. With a dict output the models are
    ``model_names`` if given; otherwise the entry ``logits`` if present, else ``Student``
    if present, else the only entry; anything else is an error asking for ``model_names``
    (parts are then named ``CELoss_<model>``). Rows labelled ``-1`` are skipped; on a mixed batch
    the loss is PaddleClas's ``MixCELoss`` ``lam * CE(a) + (1 - lam) * CE(b)`` (:mod:`ppssld.loss.mixed`).

    Args:
        weight: multiplier in the total loss.
        epsilon: label smoothing in (0, 1), or null.
        reduction: ``mean`` (over labeled rows) or ``sum``.
        model_names: models to use when outputs are a dict.
        key: pick ``output[key]`` when a model returns a dict.
    """

    accepts_mixed_labels = True

    def __init__(self, weight: float = 1.0, epsilon: Optional[float] = None, reduction: str = "mean",
                 model_names: Optional[Sequence[str]] = None, key: Optional[str] = None) -> None:
        super().__init__(weight, key)
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction must be 'mean' or 'sum' (a scalar loss is needed), got {reduction!r}")
        if model_names is not None:
            check_model_names(model_names)
        self.epsilon = check_epsilon(epsilon)
        self.reduction = reduction
        self.model_names = list(model_names) if model_names is not None else None

    def _auto_name(self, outputs: Dict[str, Any]) -> str:
        name = student_output_name(outputs)
        if name is not None:
            return name
        raise ConfigError(f"CELoss{' at ' + self.where if self.where else ''} got outputs of several models "
                          f"{sorted(outputs)}; set model_names (e.g. [Student]) or use DistillationGTCELoss")

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        labels = require_labels(labels, self.where or self.config_name)
        if not isinstance(outputs, dict):
            if self.model_names is not None:
                raise ConfigError(f"CELoss{' at ' + self.where if self.where else ''} has model_names "
                                  f"{self.model_names} but the model output is a single Tensor")
            return {self.config_name: hard_ce(outputs, labels, self.epsilon, self.reduction)}
        names = self.model_names or [self._auto_name(outputs)]
        return {f"{self.config_name}_{name}": hard_ce(
            select_output(outputs, name, self.key, self.where), labels, self.epsilon, self.reduction)
            for name in names}
