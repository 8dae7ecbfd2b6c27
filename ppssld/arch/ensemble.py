"""An ensemble of frozen teachers as one teacher: ``Arch.ensemble`` and the target it gives.

Config (beside ``Arch.models``, whose frozen entries are the members)::

    Arch:
      name: DistillationModel
      models: [{TeacherA: {...}}, {TeacherB: {...}}, {Student: {...}}]
      freeze_params_list: [true, true, false]
      ensemble: {name: Teacher, members: [TeacherA, TeacherB], weights: [0.5, 0.5], temperature: 1.0}

The ensemble's output, under its ``name`` among the DistillationModel's outputs, is

    log( sum_i w_i * softmax(z_i / T) )        (weights normalised to sum 1)

the log of the weighted mean of the members' probabilities. Every soft loss reads a teacher through
``softmax(teacher / T_loss)``; ``softmax(log p) = p``, so at ``T_loss = 1`` the loss sees the mean
probability itself, and a loss at another temperature sees ``p ** (1 / T_loss)`` renormalised (the mean
sharpened or softened, not the mean of tempered softmaxes: put the temperature in ``Arch.ensemble`` for that).
The value is computed as ``logsumexp_i(log w_i + log_softmax(z_i / T))``, finite for any finite logits.
This module is the one rule: online distillation, the soft-label cache and mining all call
:func:`mean_log_probs`.
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import paddle
import paddle.nn.functional as F

from ppssld.arch.roles import LOGITS, TEACHER, aligned_list, model_entries
from ppssld.utils.checks import is_finite_number
from ppssld.utils.config import refuse_unknown_keys
from ppssld.utils.errors import ConfigError, did_you_mean

ENSEMBLE_KEYS = ("name", "members", "weights", "temperature")
DEFAULT_NAME = TEACHER  # what PaddleClas's loss configs call the teacher (model_name_pairs [[Student, Teacher]])


@dataclass(frozen=True)
class EnsembleSpec:
    """A checked ``Arch.ensemble``: its output name, member names, weights (sum 1) and temperature."""
    name: str
    members: Tuple[str, ...]
    weights: Tuple[float, ...]
    temperature: float

    def record(self) -> Dict[str, Any]:
        """The plain fields manifests, reports and logs record."""
        return {"name": self.name, "members": list(self.members), "weights": list(self.weights),
                "temperature": self.temperature}

    def describe(self) -> str:
        """``Teacher = 0.5 x TeacherA + 0.5 x TeacherB (T 1)`` for logs."""
        terms = " + ".join(f"{w:g} x {m}" for m, w in zip(self.members, self.weights))
        return f"{self.name} = mean softmax of {terms} (temperature {self.temperature:g})"


def _members(value: Any, names: List[str], frozen: List[Any]) -> Tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(m, str) for m in value):
        raise ConfigError(f"Arch.ensemble.members must list at least two Arch.models names (an ensemble of one is "
                          f"that teacher: name it in the losses directly), got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"Arch.ensemble.members names a model twice: {value!r} (give it a larger weight instead)")
    for member in value:
        if member not in names:
            raise ConfigError(f"Arch.ensemble.members: {member!r} is not among Arch.models {names}."
                              f"{did_you_mean(member, names)}")
        i = names.index(member)
        if not frozen[i]:
            raise ConfigError(f"Arch.ensemble.members: {member} is not frozen; an ensemble averages frozen teachers: "
                              f"set Arch.freeze_params_list[{i}]: true")
    return tuple(value)


def _weights(value: Any, count: int) -> Tuple[float, ...]:
    if value is None:
        return tuple(1.0 / count for _ in range(count))
    if not isinstance(value, list) or len(value) != count:
        raise ConfigError(f"Arch.ensemble.weights must list one weight per member ({count}), got {value!r}")
    if not all(is_finite_number(w) and w >= 0 for w in value):
        raise ConfigError(f"Arch.ensemble.weights must be finite numbers >= 0 (one per member), got {value!r}")
    total = float(sum(value))
    if total <= 0:
        raise ConfigError(f"Arch.ensemble.weights are all zero ({value!r}): at least one member must count")
    return tuple(float(w) / total for w in value)


def ensemble_spec(arch: Dict[str, Any]) -> Optional[EnsembleSpec]:
    """The checked ``Arch.ensemble`` of a DistillationModel ``arch``, or None when it has none.

    Raises:
        ConfigError: an unknown key (naming the closest), members that are not frozen ``Arch.models`` entries,
            weights of the wrong length, negative or all zero, a temperature that is not > 0, or a name that an
            ``Arch.models`` entry already has.
    """
    value = arch.get("ensemble") if isinstance(arch, dict) else None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"Arch.ensemble must be a mapping like {{name: Teacher, members: [TeacherA, TeacherB]}}, "
                          f"got {value!r}")
    refuse_unknown_keys(value, ENSEMBLE_KEYS, "Arch.ensemble")
    entries = model_entries(arch)
    names = [key for key, _ in entries]
    frozen = aligned_list(arch, "freeze_params_list", len(entries))
    name = value.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not name or name == LOGITS:
        raise ConfigError(f"Arch.ensemble.name must be a name for the losses to use (e.g. Teacher), got {name!r}")
    if name in names:
        raise ConfigError(f"Arch.ensemble.name {name!r} is already an Arch.models entry; give the ensemble its own "
                          f"name (the losses' model_name_pairs use it, e.g. [[Student, {name}Ensemble]])")
    members = _members(value.get("members"), names, frozen)
    temperature = value.get("temperature", 1.0)
    if not is_finite_number(temperature) or temperature <= 0:
        raise ConfigError(f"Arch.ensemble.temperature must be a number > 0, got {temperature!r}")
    return EnsembleSpec(name, members, _weights(value.get("weights"), len(members)), float(temperature))


def member_logits(output: Any) -> paddle.Tensor:
    """A member's logits from its output (a tensor, or the ``{"logits", <return_patterns>...}`` dict)."""
    return output[LOGITS] if isinstance(output, dict) else output


def mean_log_probs(logits: Sequence[paddle.Tensor], weights: Sequence[float], temperature: float = 1.0,
                   where: str = "Arch.ensemble") -> paddle.Tensor:
    """``log(sum_i w_i softmax(z_i / T))`` in float32 (module docstring); members of weight 0 are left out.

    Raises:
        ConfigError: members that predict different numbers of classes.
    """
    shapes = [list(z.shape) for z in logits]
    if any(s != shapes[0] for s in shapes):
        raise ConfigError(f"{where}: the members' outputs have different shapes {shapes}; every member must "
                          f"predict the same classes")
    terms = []
    for z, w in zip(logits, weights):
        if w <= 0:
            continue
        x = z.astype("float32") if z.dtype != paddle.float32 else z
        if temperature != 1.0:
            x = x / float(temperature)
        terms.append(F.log_softmax(x, axis=-1) + math.log(w))
    if len(terms) == 1:
        return terms[0]
    return paddle.logsumexp(paddle.stack(terms, axis=0), axis=0)
