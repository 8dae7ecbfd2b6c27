"""Pick the model to export out of an ``Arch`` config and load it from a checkpoint.

Only the inference model (``Arch.infer_model_name``, the student) of a DistillationModel is
built; the teacher is neither built nor loaded. A checkpoint may be a DistillationModel
checkpoint (``Teacher.xxx`` / ``Student.xxx`` keys) or already hold the plain backbone keys.
"""
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import paddle
import paddle.nn as nn

from ppssld.arch.attention import backbone_entry
from ppssld.arch.build import build_model, infer_model_name
from ppssld.arch.features import logits_only
from ppssld.arch.weights import load_state_dict, load_weights, resolve_params_path, strip_prefix
from ppssld.slim.apply import is_quant_key, quantize_student, with_fresh_quantizers
from ppssld.utils.config import trust_weights
from ppssld.utils.errors import ConfigError, WeightsError
from ppssld.utils.io import atomic_save
from ppssld.utils.safetensors_io import save_safetensors

logger = logging.getLogger(__name__)


@dataclass
class ExportTarget:
    """What is exported.

    Attributes:
        key: the model's name inside a DistillationModel (``"Student"``), None for a plain model.
        backbone: the zoo name (``MobileNetV3_small_x0_35``).
        cfg: the backbone's own config (``name``, ``class_num``, ...).
        siblings: the other models' names (never built).
        prefix: the checkpoint key prefix of its weights (``Student`` or, for an AFD
            ``AttentionModel``, ``Student.<backbone entry>``); defaults to ``key``.
    """
    key: Optional[str]
    backbone: str
    cfg: Dict[str, Any]
    siblings: List[str] = field(default_factory=list)
    prefix: Optional[str] = None


def export_target(arch: Dict[str, Any]) -> ExportTarget:
    """Find the model export uses.

    Args:
        arch: the ``Arch`` section.
    Returns:
        The target description.
    Raises:
        ConfigError: no name, or ``infer_model_name`` not among the models.
    """
    if not isinstance(arch, dict) or "name" not in arch:
        raise ConfigError("Arch must be a mapping with a 'name'")
    if arch["name"] != "DistillationModel":
        return ExportTarget(None, str(arch["name"]), dict(arch))
    key = infer_model_name(arch)
    entries = [next(iter(item.items())) for item in arch.get("models") or []]
    names = [name for name, _ in entries]
    if key not in names:
        raise ConfigError(f"Arch.infer_model_name {key!r} is not among Arch.models {names}")
    cfg = dict(dict(entries)[key])
    prefix = key
    if cfg.get("name") == "AttentionModel":  # AFD: export the backbone, not the feature transforms
        inner, cfg = backbone_entry(cfg, f"Arch.models.{key}")
        prefix = f"{key}.{inner}"
    if "name" not in cfg:
        raise ConfigError(f"Arch.models.{key} has no 'name' (the backbone to export)")
    return ExportTarget(key, str(cfg["name"]), cfg, [n for n in names if n != key], prefix)


def _export_arch(arch: Dict[str, Any], target: ExportTarget) -> Dict[str, Any]:
    """``arch`` with the target's entry replaced by its backbone config (for an AttentionModel student)."""
    if target.key is None or target.prefix == target.key:
        return arch
    models = [{target.key: dict(target.cfg)} if next(iter(m)) == target.key else m for m in arch["models"]]
    return {**arch, "models": models}


def select_state(state: Dict[str, Any], target: ExportTarget, source: str) -> Dict[str, Any]:
    """The target's weights out of a checkpoint, with plain backbone key names.

    Keys ``<key>.xxx`` become ``xxx`` (exact prefix match, so ``StudentX.w`` is not taken for
    ``Student``); other models' keys are dropped. A checkpoint without any prefixed key is taken
    to hold plain backbone keys already.

    Raises:
        WeightsError: a DistillationModel checkpoint that has no key for the target.
    """
    if target.key is None:
        prefixed = sorted({k.split(".", 1)[0] for k in state if k.startswith(("Student.", "Teacher."))})
        if prefixed and len(prefixed) == len({k.split(".", 1)[0] for k in state}):
            raise WeightsError(f"{source} is a DistillationModel checkpoint (keys start with {prefixed}) but the "
                               f"config's Arch is the plain model {target.backbone!r}; export it with the "
                               f"distillation config, or use its <Student>_ssld_pretrained.pdparams")
        return dict(state)
    picked = strip_prefix(state, target.prefix or target.key)
    if picked:
        dropped = len(state) - len(picked)
        if dropped:
            logger.info("%s: took %d %s.* keys, ignored %d keys of other models", source, len(picked),
                        target.key, dropped)
        return picked
    foreign = sorted({k.split(".", 1)[0] for k in state if "." in k and k.split(".", 1)[0] in target.siblings})
    if foreign:
        raise WeightsError(f"{source} holds weights of {foreign} but none of {target.key!r} "
                           f"(no key starts with '{target.key}.'); export needs a checkpoint of the "
                           f"model named by Arch.infer_model_name")
    return dict(state)


def build_export_model(config: Dict[str, Any], weights: Optional[str] = None,
                       strict: bool = True) -> Tuple[nn.Layer, ExportTarget, str]:
    """Build the model to export and load its weights.

    Args:
        config: the full config.
        weights: checkpoint path (``.pdparams`` / ``.safetensors`` optional); default ``Global.pretrained_model``;
            when neither is set, the target's own ``pretrained`` weights from ``Arch``.
        strict: every backbone key present, nothing extra, equal shapes.
    Returns:
        ``(layer in eval mode, target, weights source)``.
    Raises:
        ConfigError: no weights anywhere (exporting random weights is refused).
        WeightsError: weights that do not match the backbone.
    """
    arch = config.get("Arch") or {}
    target = export_target(arch)
    trust = trust_weights(config)
    if target.key is None:
        arch = logits_only(arch)  # the exported model returns logits only (a student is built alone anyway)
    arch = _export_arch(arch, target)
    weights = weights or (config.get("Global") or {}).get("pretrained_model")
    if weights:
        layer = build_model(arch, strict=strict, only=target.key, load_pretrained=False)
        quantize_student(layer, config)  # Slim.quant: the checkpoint holds the trained quantizers too
        path = resolve_params_path(str(weights), "Global.pretrained_model")
        state = select_state(load_state_dict(path, trust=trust), target, path)
        load_weights(layer, with_fresh_quantizers(layer, state, path), strict=strict, where=path)
        source = path
    else:
        own = _own_pretrained(arch, target)
        if not own:
            raise ConfigError("nothing to export: give the trained checkpoint with "
                              "-o Global.pretrained_model=output/DistillationModel/best_model")
        layer = build_model(arch, strict=strict, only=target.key, load_pretrained=True, trust=trust)
        quantize_student(layer, config)
        source = str(own)
    layer.eval()
    logger.info("export model %s%s loaded from %s", target.backbone,
                f" ({target.key} of DistillationModel)" if target.key else "", source)
    return layer, target, source


def _own_pretrained(arch: Dict[str, Any], target: ExportTarget) -> Optional[str]:
    if target.key is None:
        return target.cfg.get("pretrained") or None
    names = [next(iter(item)) for item in arch.get("models") or []]
    listed = arch.get("pretrained_list") or [None] * len(names)
    return target.cfg.get("pretrained") or listed[names.index(target.key)] or None


def count_classes(layer: nn.Layer, image_shape: List[int]) -> int:
    """The number of model outputs, from one forward pass on zeros (eval mode)."""
    layer.eval()
    with paddle.no_grad():
        out = layer(paddle.zeros([1] + list(image_shape), dtype="float32"))
    if isinstance(out, dict):
        raise ConfigError("the export model returns a dict; export needs a classifier returning logits")
    if isinstance(out, (list, tuple)):
        raise ConfigError(f"the export model returns {len(out)} outputs (e.g. GoogLeNet's auxiliary heads); "
                          "export needs a classifier returning one logits tensor: PaddleClas keeps the first, "
                          "ppssld does not export multi-output backbones yet")
    return int(out.shape[-1])


def save_pretrained(layer: nn.Layer, path: str) -> Dict[str, Any]:
    """Save ``layer``'s weights with plain backbone keys (atomically) to ``path`` (``.pdparams``)
    and, with the same keys, to the ``.safetensors`` beside it (readable without unpickling). A
    quantization-aware trained layer saves its float weights only (its quantizers go to the int8 export).

    Returns:
        The saved state dict.
    """
    state = {k: v for k, v in layer.state_dict().items() if not is_quant_key(k)}
    atomic_save(path, lambda tmp: paddle.save(state, tmp))
    save_safetensors(state, safetensors_path(path), path)
    logger.info("wrote %s (%d tensors, plain backbone keys) and its .safetensors twin", path, len(state))
    return state


def safetensors_path(pdparams: str) -> str:
    """``x_pretrained.pdparams`` -> ``x_pretrained.safetensors``."""
    stem = pdparams[: -len(".pdparams")] if pdparams.endswith(".pdparams") else pdparams
    return stem + ".safetensors"


def reparameterize(layer: nn.Layer) -> int:
    """Fuse re-parameterisable blocks (RepVGG, PP-LCNetV2 ...) for inference.

    Returns:
        How many blocks were fused.
    """
    count = 0
    for sub in layer.sublayers(include_self=True):
        if hasattr(sub, "re_parameterize") and not getattr(sub, "is_repped", False):
            sub.re_parameterize()
            count += 1
    return count
