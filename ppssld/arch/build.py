"""Build the model an ``Arch`` config describes, loading weights strictly."""
import fnmatch
import logging
import re
import zlib
from collections import Counter
from contextlib import contextmanager
from functools import partial
from typing import Any, Collection, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn
from paddle.base import unique_name

from ppssld.arch.attention import build_attention_model
from ppssld.arch.distillation import BN_MODES, DistillationModel
from ppssld.arch.ensemble import ensemble_spec
from ppssld.arch.features import logits_only
from ppssld.arch.roles import aligned_list, infer_model, model_entries
from ppssld.arch.weights import load_weights
from ppssld.arch.zoo import build_backbone, default_class_num
from ppssld.utils.checks import is_int
from ppssld.utils.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

DISTILL_KEYS = ("name", "class_num", "models", "freeze_params_list", "pretrained_list",
                "infer_model_name", "teacher_bn_mode", "use_sync_bn", "infer_add_softmax", "infer_output_key",
                "use_ssld", "teacher_engine", "ensemble")
_WARN_KEYS = {"use_ssld": "on a DistillationModel PaddleClas ignores it too; set use_ssld on each model"}
ENGINE_KEYS = ("use_sync_bn", "teacher_engine")  # read by ppssld.engine.builder / ppssld.teacher, not the model
INPUT_KEY = "input"  # a frozen member's own input: read by ppssld.teacher.inputs, not the backbone
EXPORT_KEYS = ("infer_add_softmax", "infer_output_key")  # read by ppssld.export.outputs, not the model
_warned: set = set()


def _warn_once(key: str, where: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning("%s.%s is a PaddleClas key that ppssld ignores (%s)", where, key, _WARN_KEYS[key])


def build_single(cfg: Dict[str, Any], where: str, strict: bool = True, trust: bool = False) -> nn.Layer:
    """Build one zoo backbone from ``{name, class_num, pretrained, lr_mult_list, ...}``.

    ``pretrained`` is a local path (suffix optional) or false; ``True`` is an error
    because ppssld never downloads weights. ``trust``: ``Global.trust_weights``.
    """
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ConfigError(f"{where} has no 'name' (the backbone to build)")
    name = cfg.pop("name")
    train_only = cfg.pop("train_only", None)
    pretrained = cfg.pop("pretrained", None)
    use_ssld = cfg.pop("use_ssld", False)
    for key in ENGINE_KEYS + EXPORT_KEYS:
        cfg.pop(key, None)
    for key in list(cfg):
        if key in _WARN_KEYS:
            cfg.pop(key)
            _warn_once(key, where)
    layer = build_backbone(name, where=where, **cfg)
    if pretrained is True:
        ssld = "_ssld" if use_ssld else ""
        raise ConfigError(f"{where}.pretrained is True, which asks to download {name}{ssld}_pretrained.pdparams; "
                          f"ppssld never downloads: set {where}.pretrained to a local .pdparams path")
    if pretrained:
        load_weights(layer, str(pretrained), strict=strict, where=f"{where}.pretrained={pretrained}", trust=trust)
        logger.info("%s: loaded %s", where, pretrained)
    if train_only is not None:
        restrict_trainable(layer, train_only, f"{where}.train_only")
    return layer


def restrict_trainable(layer: nn.Layer, patterns: List[str], where: str) -> int:
    """Freeze every parameter whose name matches none of ``patterns`` (shell-style, e.g. ``fc.*``).

    Used by the FixRes stage: fine-tune at a larger resolution with all but the classifier frozen
    (BatchNorm layers stay in train mode, so their statistics adapt to the new resolution).

    Returns:
        The number of parameters left trainable.
    Raises:
        ConfigError: a pattern that matches no parameter, or not a list of strings.
    """
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns) or not patterns:
        raise ConfigError(f"{where} must be a non-empty list of parameter-name patterns like ['fc.*'], "
                          f"got {patterns!r}")
    names = [n for n, p in layer.named_parameters() if not p.stop_gradient]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"{where}: pattern {pattern!r} matches no trainable parameter; names look like "
                              f"{', '.join(names[-4:])}")
    kept = 0
    for name, param in layer.named_parameters():
        keep = any(fnmatch.fnmatchcase(name, p) for p in patterns) and not param.stop_gradient
        param.stop_gradient = not keep
        kept += int(keep)
    logger.info("%s: %d parameter tensors trainable, the rest frozen", where, kept)
    return kept


def build_model(arch: Dict[str, Any], strict: bool = True, only: Optional[str] = None,
                load_pretrained: bool = True, provided: Collection[str] = (), trust: bool = False,
                seed: Optional[int] = None) -> nn.Layer:
    """Build a plain backbone or a DistillationModel from ``Arch``.

    The model is built in a fresh name scope, so its parameters get the names a fresh
    PaddleClas process gives them (``conv2d_0.w_0`` ...; the teacher first, then the student)
    and PaddleClas's optimizer states (keyed by those names) load, and ours load in PaddleClas.

    Args:
        arch: the ``Arch`` section (not mutated).
        strict: strict weight loading (``Global.strict_load``).
        only: build just this named model of a DistillationModel (the student for export
            and evaluation, the teacher for mining), without ``return_patterns``; other models
            are neither built nor loaded.
        load_pretrained: load ``pretrained`` weights; False when a checkpoint is loaded next.
        provided: names of the models whose weights a whole-model file loaded next provides
            (``Global.pretrained_model`` / ``Global.checkpoints``): their ``pretrained`` is
            neither required (a frozen teacher) nor loaded. For a plain model, any name.
        trust: read weight pickles with ``paddle.load`` (``Global.trust_weights``).
        seed: ``Global.seed`` for training: each model of a DistillationModel is initialised from its own
            stream, :func:`member_seed` ``(seed, name)``, so the student starts from the same weights whether
            or not a teacher is built before it (a soft-label cache builds none).
    Returns:
        The model.
    Raises:
        ConfigError: bad keys, or a frozen model whose weights nothing provides.
    """
    if not isinstance(arch, dict) or "name" not in arch:
        raise ConfigError("Arch must be a mapping with a 'name'")
    with paddle.utils.unique_name.guard():
        if arch["name"] != "DistillationModel":
            arch = dict(arch)
            if not load_pretrained or provided:
                arch.pop("pretrained", None)
            return build_single(arch, "Arch", strict, trust)
        return _build_distillation(arch, strict, only, load_pretrained, set(provided), trust, seed)


@contextmanager
def names_after(model: nn.Layer) -> Iterator[None]:
    """A name scope that continues ``model``'s: layers built inside it (a loss's connector, MGD
    generator, PEFD projectors) take names after the model's, as in a PaddleClas process, where
    the loss is built after the model. Without it they would draw from the outer scope and could
    repeat a model parameter's name (``conv2d_22.w_0``), and Paddle's optimizers, which keep their
    state by parameter name, would then mix the two parameters' moments."""
    generator = unique_name.UniqueNameGenerator()
    for tensor in list(model.parameters()) + list(model.buffers()):
        match = re.match(r"(.+)_(\d+)\.", tensor.name or "")
        if match:
            key = match.group(1)
            generator.ids[key] = max(generator.ids[key], int(match.group(2)) + 1)
    with unique_name.guard(generator):
        yield


def member_seed(seed: int, name: str) -> int:
    """The initialisation seed of model ``name`` of a DistillationModel trained with ``Global.seed`` = ``seed``."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2 ** 31 - 1)


def _build_distillation(arch: Dict[str, Any], strict: bool, only: Optional[str], load_pretrained: bool,
                        provided: set, trust: bool = False, seed: Optional[int] = None) -> nn.Layer:
    for key in arch:
        if key not in DISTILL_KEYS:
            raise ConfigError(f"unknown key Arch.{key} for DistillationModel.{did_you_mean(key, DISTILL_KEYS)} "
                              f"Valid keys: {', '.join(DISTILL_KEYS)}")
    for key in _WARN_KEYS:
        if arch.get(key) is not None:
            _warn_once(key, "Arch")
    entries = model_entries(arch)
    freeze = aligned_list(arch, "freeze_params_list", len(entries))
    pretrained = aligned_list(arch, "pretrained_list", len(entries))
    bn_mode = arch.get("teacher_bn_mode", "eval")
    if bn_mode not in BN_MODES:
        raise ConfigError(f"Arch.teacher_bn_mode must be one of {list(BN_MODES)}, got {bn_mode!r}")
    names = [k for k, _ in entries]
    ensemble = ensemble_spec(arch)
    check_member_class_counts(arch)
    infer_name = arch.get("infer_model_name")
    if only is not None and only not in names:
        raise ConfigError(f"model {only!r} is not among Arch.models {names}.{did_you_mean(only, names)}")
    if infer_name is not None and infer_name not in names:
        raise ConfigError(f"Arch.infer_model_name {infer_name!r} is not among {names}.{did_you_mean(infer_name, names)}")
    built, frozen, own_input = {}, [], []
    for i, (key, cfg) in enumerate(entries):
        if only is not None and key != only:
            continue
        where = f"Arch.models[{i}].{key}"
        if cfg.pop(INPUT_KEY, None) is not None:
            if not freeze[i]:
                raise ConfigError(f"{where}.input: only a frozen teacher takes its own input (the student trains on "
                                  f"the views the transforms make); remove it or freeze {key}")
            own_input.append(key)
        if pretrained[i]:
            if cfg.get("pretrained") not in (None, False) and cfg.get("pretrained") != pretrained[i]:
                raise ConfigError(f"{where}.pretrained and Arch.pretrained_list[{i}] disagree")
            cfg["pretrained"] = pretrained[i]
        if freeze[i]:
            frozen.append(key)
            if not cfg.get("pretrained") and only is None and load_pretrained and key not in provided:
                raise ConfigError(f"{where} is frozen (freeze_params_list[{i}]) but has no pretrained weights: "
                                  f"a random frozen teacher teaches nothing. Set {where}.pretrained "
                                  f"to a local .pdparams path, or Global.pretrained_model to a whole "
                                  f"DistillationModel checkpoint holding {key}.*")
        if not load_pretrained or key in provided:
            cfg.pop("pretrained", None)
        if only is not None:  # built alone for inference (export, mining): logits only
            cfg = logits_only(cfg)
        if seed is not None:
            paddle.seed(member_seed(seed, key))
        if cfg.get("name") == "AttentionModel":  # AFD: backbone + feature transforms (ppssld.arch.attention)
            built[key] = build_attention_model(cfg, where, partial(build_single, trust=trust), strict, load_pretrained)
            continue
        built[key] = build_single(cfg, where, strict, trust)
    if only is not None:
        return built[only]
    _make_names_unique(built)
    return DistillationModel(built, frozen=frozen, infer_model_name=infer_name, frozen_bn_mode=bn_mode,
                             ensemble=ensemble, input_members=own_input)


def _make_names_unique(models: Dict[str, nn.Layer]) -> None:
    """Prefix ``<Model>.`` to parameter names a model shares with an earlier one.

    Only models with fixed parameter names (built twice, e.g. a ResNeXt teacher and student)
    repeat names; PaddleClas cannot build those at all. Optimizer accumulators are keyed by
    parameter name, so the names must be unique within one model.
    """
    seen: Counter = Counter()
    for key, layer in models.items():
        renamed = 0
        for param in layer.parameters():
            if seen[param.name]:
                param.name = f"{key}.{param.name}"
                renamed += 1
            seen[param.name] += 1
        if renamed:
            logger.info("%s: %d fixed parameter names repeat an earlier model's; prefixed with '%s.'",
                        key, renamed, key)


def infer_model_name(arch: Dict[str, Any]) -> Optional[str]:
    """The name of the model export and evaluation use (None for a plain model)."""
    if arch.get("name") != "DistillationModel":
        return None
    names = [k for k, _ in model_entries(arch)]
    frozen = aligned_list(arch, "freeze_params_list", len(names))
    return infer_model(names, [bool(f) for f in frozen], arch.get("infer_model_name"))


def arch_class_num(arch: Dict[str, Any]) -> Optional[int]:
    """The number of classes the trained model predicts (``Arch.class_num`` or the infer model's)."""
    if arch.get("name") != "DistillationModel":
        return int(arch["class_num"]) if arch.get("class_num") is not None else None
    name = infer_model_name(arch)
    for key, cfg in model_entries(arch):
        if key == name and cfg.get("class_num") is not None:
            return int(cfg["class_num"])
    return int(arch["class_num"]) if arch.get("class_num") is not None else None


def member_class_count(cfg: Dict[str, Any]) -> Tuple[Optional[int], str]:
    """``(classes, where the number comes from)`` of one ``Arch.models`` entry: its ``class_num``, else its
    backbone's default (PaddleClas builds members without ``Arch.class_num``, and so does ppssld); ``None``
    when that is unknown (an ``AttentionModel``, a backbone without a ``class_num`` default)."""
    value = cfg.get("class_num")
    if value is not None:
        return (value if is_int(value) else None), "its class_num"
    name = cfg.get("name")
    default = default_class_num(name) if isinstance(name, str) else None
    return default, f"no class_num: the {name} default"


def check_compared_class_counts(arch: Dict[str, Any], pairs: Iterable[Sequence[str]]) -> None:
    """Refuse a DistillationModel whose members a loss compares class by class but that predict different
    numbers of classes (a student with ``class_num: 12``, a teacher with 10).

    The rule: only pairs whose logits a configured loss compares element by element are checked (``pairs``:
    ``(loss location, first model, second model)``, from :func:`ppssld.loss.compared_logits`); members
    compared on features (``DistillationPairLoss`` with ``s_key``/``t_key``, AFD, RKD's relations) may differ
    legitimately, and a member whose class count is unknown is not judged.

    Raises:
        ConfigError: naming the loss, both models (with their config place) and both counts.
    """
    if not isinstance(arch, dict) or arch.get("name") != "DistillationModel":
        return
    entries = {key: (i, cfg) for i, (key, cfg) in enumerate(model_entries(arch))}
    ensemble = ensemble_spec(arch)
    if ensemble is not None:  # the ensemble predicts its members' classes (checked equal)
        entries[ensemble.name] = entries[ensemble.members[0]]
    for where, first, second in pairs:
        if first not in entries or second not in entries:
            continue  # the loss names an unknown model: it says so itself
        (i, a), (j, b) = entries[first], entries[second]
        (count_a, from_a), (count_b, from_b) = member_class_count(a), member_class_count(b)
        if count_a is None or count_b is None or count_a == count_b:
            continue
        raise ConfigError(f"{where} compares the logits of {first} and {second} class by class, but "
                          f"Arch.models[{i}].{first} ({a.get('name')}) predicts {count_a} classes ({from_a}) and "
                          f"Arch.models[{j}].{second} ({b.get('name')}) {count_b} ({from_b}); both must predict "
                          f"the same classes: set Arch.models[{i}].{first}.class_num: {count_b}, or distil from "
                          f"a model with {count_a} classes (losses on features, e.g. DistillationPairLoss with "
                          f"s_key/t_key or AFDLoss, may pair models of different class counts)")


def check_member_class_counts(arch: Dict[str, Any]) -> None:
    """Refuse an ``Arch.ensemble`` whose members predict different numbers of classes (a member whose count is
    unknown is not judged here; :func:`ppssld.arch.ensemble.mean_log_probs` refuses different output shapes).

    Raises:
        ConfigError: naming both members, their config places and their counts.
    """
    ensemble = ensemble_spec(arch)
    if ensemble is None:
        return
    entries = {key: (i, cfg) for i, (key, cfg) in enumerate(model_entries(arch))}
    known = []
    for member in ensemble.members:
        i, cfg = entries[member]
        count, source = member_class_count(cfg)
        if count is not None:
            known.append((member, i, count, source))
    for member, i, count, source in known[1:]:
        first, j, first_count, first_source = known[0]
        if count != first_count:
            raise ConfigError(f"Arch.ensemble.members: {first} (Arch.models[{j}]) predicts {first_count} classes "
                              f"({first_source}) but {member} (Arch.models[{i}]) {count} ({source}); an ensemble "
                              f"averages probabilities class by class, so every member must predict the same "
                              f"classes: set their class_num alike or leave {member} out")


def check_arch_section(arch: Any) -> None:
    """The shape of ``Arch`` that everything after validation relies on: a mapping with a name (the checkpoint
    folder is named after it) and whole positive class counts, its own and each member's.

    Raises:
        ConfigError: naming the key and what would be right.
    """
    if not isinstance(arch, dict):
        raise ConfigError(f"Arch must be a mapping with a 'name' (a backbone, or DistillationModel), got {arch!r}")
    name = arch.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"Arch.name must be a model name, e.g. ResNet50_vd or DistillationModel, got {name!r}")
    places = [("Arch", arch)]
    if name == "DistillationModel":
        places += [(f"Arch.models[{i}].{key}", cfg) for i, (key, cfg) in enumerate(model_entries(arch))]
    for where, cfg in places:
        if where != "Arch" and not (isinstance(cfg.get("name"), str) and cfg["name"]):
            raise ConfigError(f"{where}.name must be a model name, e.g. ResNet50_vd, got {cfg.get('name')!r}")
        value = cfg.get("class_num")
        if value is not None and (not is_int(value) or value < 1):
            raise ConfigError(f"{where}.class_num must be a whole number of classes >= 1, got {value!r}")
    if name == "DistillationModel":
        check_member_class_counts(arch)
