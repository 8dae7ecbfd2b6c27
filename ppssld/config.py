"""Load, override and validate PaddleClas-schema YAML configs.

Structure (sections and their fixed keys) is checked here. Component names and their
parameters (backbones, losses, transforms, optimizers, ...) are checked by the
registries when :func:`ppssld.engine.builder.validate` runs, right after loading.
"""
import copy
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ppssld.utils.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

ANY = "any"  # a subtree validated by a builder, not by this schema

_LOADER = {
    "dataset": ANY,
    "sampler": {"name": ANY, "batch_size": ANY, "drop_last": ANY, "shuffle": ANY, "num_repeats": ANY,
                "scales": ANY, "first_bs": ANY, "divided_factor": ANY, "is_training": ANY},
    "loader": {"num_workers": ANY, "use_shared_memory": ANY},
}

SCHEMA: Dict[str, Any] = {
    "Global": {
        "checkpoints": ANY, "pretrained_model": ANY, "output_dir": ANY, "device": ANY,
        "save_interval": ANY, "eval_during_train": ANY, "eval_interval": ANY, "epochs": ANY,
        "print_batch_step": ANY, "use_visualdl": ANY, "image_shape": ANY,
        "save_inference_dir": ANY, "start_eval_epoch": ANY, "seed": ANY,
        "strict_load": ANY, "class_names": ANY,
    },
    "Arch": ANY,
    "AMP": {"use_amp": ANY, "level": ANY, "scale_loss": ANY, "use_dynamic_loss_scaling": ANY,
            "use_fp16_test": ANY, "use_promote": ANY},
    "Loss": {"Train": ANY, "Eval": ANY},
    "Optimizer": ANY,
    "DataLoader": {"Train": _LOADER, "Eval": _LOADER},
    "Metric": {"Train": ANY, "Eval": ANY},
    "Infer": {"infer_imgs": ANY, "batch_size": ANY, "transforms": ANY, "PostProcess": ANY},
}

# Keys PaddleClas accepts that ppssld does not implement yet: accepted, ignored, warned once.
UNSUPPORTED = {
    "Global.to_static": "dygraph training is used; export always converts to static",
    "Global.use_dali": "the Paddle data loader is used",
    "Global.eval_mode": "only classification evaluation exists",
    "Global.use_multilabel": "only single-label classification is supported",
    "Global.update_freq": "gradient accumulation is not implemented",
    "Global.iter_per_epoch": "epochs always cover the whole dataset",
    "Global.train_mode": "only the standard training loop exists",
    "Global.image_channel": "images are always 3-channel RGB",
    "AMP.use_fp16_test": "evaluation runs in float32",
    "EMA": "model EMA is not implemented",
    "Slim": "quantisation and pruning are not implemented",
    "DataLoader.UnLabelTrain": "put unlabeled lists in DataLoader.Train.dataset.unlabeled_label_path",
    "UnLabelLoss": "unlabeled images use the Loss.Train soft losses",
}

_warned: set = set()


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def safe_load(text: Any) -> Any:
    """Parse YAML text or a stream safely (no Python objects), with exponent floats."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str, overrides: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Read a YAML config, apply ``-o`` overrides and validate its structure.

    Args:
        path: the YAML file.
        overrides: ``Section.key.sub=value`` strings; values are parsed with ``yaml.safe_load``.
    Returns:
        A new config dict (the file and the overrides are never mutated).
    Raises:
        ConfigError: unreadable file, unknown key or bad override, naming the closest valid key.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            config = safe_load(handle)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(config).__name__}")
    config = copy.deepcopy(config)
    for item in overrides or []:
        apply_override(config, item)
    validate_structure(config, source=path)
    config.setdefault("Global", {})
    return config


def parse_override(item: str) -> tuple:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like Section.key=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"override {item!r}: empty key part in {key!r}")
    try:
        value = safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value {raw!r} is not valid YAML: {exc}") from exc
    return parts, value


def apply_override(config: Dict[str, Any], item: str) -> None:
    """Apply one ``-o`` override to ``config`` in place (the caller owns ``config``).

    List elements are addressed by index (``Arch.models.1.Student.name=...``) and
    a list item holding a one-key mapping can be addressed by that key
    (``Arch.models.Student.name=...``, ``Loss.Train.JSDivLoss.weight=4``).
    """
    parts, value = parse_override(item)
    node: Any = config
    schema: Any = SCHEMA
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part, where)
            holder, slot = (node, index) if part.lstrip("-").isdigit() else (node[index], part)
            if last:
                holder[slot] = value
                return
            node = holder[slot]
            schema = ANY
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth])} is a value, not a section")
        if isinstance(schema, dict) and part not in schema and _dotted(parts[: depth + 1]) not in UNSUPPORTED:
            valid = list(schema)
            raise ConfigError(f"override {item!r}: unknown key {where!r}.{did_you_mean(part, valid)} "
                              f"Valid keys here: {', '.join(valid)}")
        if schema == ANY and part not in node and not last:
            raise ConfigError(f"override {item!r}: {where!r} is not in the config.{did_you_mean(part, node)}")
        if last:
            node[part] = value
            return
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        schema = schema.get(part, ANY) if isinstance(schema, dict) else ANY


def _list_index(node: List[Any], part: str, where: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(node) <= index < len(node):
            raise ConfigError(f"override path {where!r}: index {index} out of range (list has {len(node)} items)")
        return index
    keys = [next(iter(x)) for x in node if isinstance(x, dict) and len(x) == 1]
    for i, elem in enumerate(node):
        if isinstance(elem, dict) and len(elem) == 1 and part in elem:
            return i
    raise ConfigError(f"override path {where!r}: no list item named {part!r}.{did_you_mean(part, keys)}")


def _dotted(parts: Sequence[str]) -> str:
    return ".".join(parts)


def validate_structure(config: Dict[str, Any], source: str = "config") -> None:
    """Check sections and fixed keys against :data:`SCHEMA`; warn once per unsupported key."""
    _check(config, SCHEMA, [], source)


def _check(node: Any, schema: Any, path: List[str], source: str) -> None:
    if schema == ANY or node is None:
        return
    if not isinstance(node, dict):
        raise ConfigError(f"{source}: {_dotted(path)} must be a mapping, got {type(node).__name__}")
    for key, value in node.items():
        dotted = _dotted(path + [key])
        if dotted in UNSUPPORTED:
            if dotted not in _warned:
                _warned.add(dotted)
                logger.warning("%s: %s is a PaddleClas key that ppssld does not support yet and ignores "
                               "(%s)", source, dotted, UNSUPPORTED[dotted])
            continue
        if key not in schema:
            where = _dotted(path) or "the top level"
            raise ConfigError(f"{source}: unknown key {dotted!r}.{did_you_mean(key, schema)} "
                              f"Valid keys in {where}: {', '.join(schema)}")
        _check(value, schema[key], path + [key], source)


def get(config: Dict[str, Any], dotted: str, default: Any = None) -> Any:
    """Read ``config['A']['b']...`` by dotted path, returning ``default`` when absent or null."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return default
        node = node[part]
    return node
