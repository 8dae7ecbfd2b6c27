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
        "strict_load": ANY, "class_names": ANY, "trust_weights": ANY, "update_freq": ANY, "use_sync_bn": ANY,
        "use_multilabel": ANY, "soft_label_cache": ANY, "eval_teacher": ANY, "to_static": ANY, "train_mode": ANY,
    },
    "Arch": ANY,
    "AMP": {"use_amp": ANY, "level": ANY, "scale_loss": ANY, "use_dynamic_loss_scaling": ANY,
            "use_fp16_test": ANY, "use_promote": ANY},
    "Loss": {"Train": ANY, "Eval": ANY},
    "Optimizer": ANY,
    "DataLoader": {"Train": _LOADER, "Eval": _LOADER},
    "Metric": {"Train": ANY, "Eval": ANY},
    "Infer": {"infer_imgs": ANY, "batch_size": ANY, "transforms": ANY, "PostProcess": ANY},
    "EMA": {"decay": ANY},
    "Slim": ANY,  # checked by ppssld.slim.settings (quant: implemented; prune: refused)
}

# Keys PaddleClas accepts that ppssld does not implement yet: accepted, ignored, warned once.
UNSUPPORTED = {
    "Global.use_dali": "the Paddle data loader is used",
    "Global.eval_mode": "only classification evaluation exists",
    "Global.iter_per_epoch": "epochs always cover the whole dataset",
    "Global.image_channel": "images are always 3-channel RGB",
    "AMP.use_fp16_test": "evaluation runs in float32",
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
    config = read_yaml_file(path, "config file")
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(config).__name__}")
    _refuse_search_config(config, path)
    config = copy.deepcopy(config)
    for item in overrides or []:
        apply_override(config, item)
    validate_structure(config, source=path)
    if config.get("Global") is not None and not isinstance(config["Global"], dict):
        raise ConfigError(f"{path}: Global must be a mapping, got {type(config['Global']).__name__}")
    validate_global_types(config, source=path)
    config.setdefault("Global", {})
    return config


def read_yaml_file(path: str, what: str) -> Any:
    """The parsed YAML of ``path`` (safe loader); a missing file or a syntax error is a ConfigError naming
    the file (and the line)."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what} {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            return safe_load(handle)
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_message(path, exc)) from exc


def refuse_unknown_keys(node: Dict[str, Any], valid: Sequence[str], where: str) -> None:
    """Refuse a key of mapping ``node`` outside ``valid``: ``unknown key <where>.<key>. Did you mean ...``."""
    for key in node:
        if key not in valid:
            raise ConfigError(f"unknown key {where}.{key}.{did_you_mean(str(key), valid)} "
                              f"Valid keys: {', '.join(valid)}")


def check_keys(node: Any, valid: Sequence[str], where: str) -> None:
    """Refuse a non-mapping ``node`` or a key of it outside ``valid``, naming the closest valid key."""
    if not isinstance(node, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(valid)}, got {type(node).__name__}")
    for key in node:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(str(key), valid)} "
                              f"Valid keys: {', '.join(valid)}")


def _yaml_message(path: str, exc: yaml.YAMLError) -> str:
    """``file:line:column: not valid YAML: what`` from a PyYAML error (lines and columns from 1)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return (f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")
            + "; check the indentation, colons and quotes on that line or the one before it")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Global keys whose type ppssld relies on: key -> (check, what would be right)
GLOBAL_TYPES = {
    "epochs": (lambda v: _is_int(v) and v >= 1, "a positive integer, e.g. 120"),
    "save_interval": (_is_int, "an integer (epochs between epoch_N snapshots; 0 or less: none)"),
    "eval_interval": (lambda v: _is_int(v) and v >= 1, "a positive integer (epochs between evaluations)"),
    "print_batch_step": (lambda v: _is_int(v) and v >= 1, "a positive integer (steps between log lines)"),
    "start_eval_epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "seed": (_is_int, "an integer"),
    "eval_during_train": (lambda v: isinstance(v, bool), "true or false"),
    "use_visualdl": (lambda v: isinstance(v, bool), "true or false"),
    "strict_load": (lambda v: isinstance(v, bool), "true or false"),
    "eval_teacher": (lambda v: isinstance(v, bool), "true or false (evaluate the frozen teacher before training)"),
    "soft_label_cache": (lambda v: isinstance(v, str) and v != "",
                         "a folder path written by tools/cache_soft_labels.py"),
    "train_mode": (lambda v: v == "progressive",
                   "'progressive' (PaddleClas's progressive training, ppssld.engine.progressive) or absent (the "
                   "standard loop); PaddleClas's other loops (metabin) are re-identification recipes ppssld does "
                   "not have"),
    "image_shape": (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(x) and x > 0 for x in v),
                    "three positive integers [channels, height, width], e.g. [3, 224, 224]"),
}


def validate_global_types(config: Dict[str, Any], source: str = "config") -> None:
    """Check the types of the Global keys ppssld reads (null means: use the default).

    Raises:
        ConfigError: naming the key, the value found and what would be right.
    """
    glob = config.get("Global") or {}
    for key, (check, right) in GLOBAL_TYPES.items():
        value = glob.get(key)
        if value is not None and not check(value):
            raise ConfigError(f"{source}: Global.{key} must be {right}, got {value!r} ({type(value).__name__}); "
                              f"check the file or its -o Global.{key}=... override")


SEARCH_KEYS = ("base_config_file", "distill_config_file", "search_dict", "search_times", "final_replace")


def _refuse_search_config(config: Dict[str, Any], path: str) -> None:
    """PULC ``search.yaml`` files are inputs of ``tools/search_strategy.py`` (:mod:`ppssld.recipes.search`: a
    hyper-parameter search that trains ``base_config_file`` many times), not training configs."""
    if not any(key in config for key in SEARCH_KEYS):
        return
    base, distill = config.get("base_config_file"), config.get("distill_config_file")
    targets = " and ".join(f"{k} {v!r}" for k, v in (("base_config_file", base), ("distill_config_file", distill)) if v)
    raise ConfigError(f"{path}: a hyper-parameter search file of PaddleClas tools/search_strategy.py, not a training "
                      f"config; it sets {', '.join(k for k in SEARCH_KEYS if k in config)}; run it with "
                      f"tools/search_strategy.py -c {path} [--dry-run], or train the config it searches over, "
                      f"{targets or 'its base config'} (paths relative to the PaddleClas root)")


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


def trust_weights(config: Dict[str, Any]) -> bool:
    """``Global.trust_weights``: read weight pickles with ``paddle.load`` (runs code they hold).

    Raises:
        ConfigError: the value is not a boolean.
    """
    value = get(config, "Global.trust_weights", False)
    if not isinstance(value, bool):
        raise ConfigError(f"Global.trust_weights must be true or false, got {value!r}")
    return value


def get(config: Dict[str, Any], dotted: str, default: Any = None) -> Any:
    """Read ``config['A']['b']...`` by dotted path, returning ``default`` when absent or null."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return default
        node = node[part]
    return node


DEFAULT_SEED = 42  # PaddleClas's Global.seed when a config has none


def global_seed(config: Dict[str, Any]) -> int:
    """``Global.seed`` (validated on load as an integer), :data:`DEFAULT_SEED` when absent: the one place
    that default lives."""
    return int(get(config, "Global.seed", DEFAULT_SEED))


DEFAULT_OUTPUT_DIR = "./output"  # PaddleClas's Global.output_dir when a config has none


def output_dir(config: Dict[str, Any]) -> str:
    """``Global.output_dir``, :data:`DEFAULT_OUTPUT_DIR` when absent (the one place that default lives)."""
    return str(get(config, "Global.output_dir", DEFAULT_OUTPUT_DIR))
