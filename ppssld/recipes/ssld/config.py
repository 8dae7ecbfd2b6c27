"""The main job's YAML (``ssld_pipeline.yaml``): its sections and keys, read and checked before any stage runs."""
from typing import Any, Dict, List, Optional

from ppssld.recipes.ssld.stage_cache import wants_cache
from ppssld.utils.config import parse_override, read_yaml_file
from ppssld.utils.errors import ConfigError, did_you_mean

SCHEMA: Dict[str, Any] = {
    "output_dir": None,
    "data": {"dataset": None, "src": None, "labeled": None, "unlabeled": None, "seed": None,
             "teacher_labeled": None},
    "teacher": {"config": None, "overrides": None, "pretrained": None},
    "baseline": {"enabled": None, "config": None, "overrides": None, "match_budget": None},
    "mine": {"enabled": None, "k": None, "min_conf": None, "cap": None, "batch_size": None, "pool": None,
             "dedup_train": None},
    "distill": {"config": None, "overrides": None, "soft_label_cache": None},
    "finetune": {"enabled": None, "config": None, "overrides": None, "soft_label_cache": None},
    "export": {"enabled": None, "predict": None, "showcase": None, "speed": None},
}

def load_pipeline_config(path: str, overrides: Optional[List[str]] = None) -> Dict[str, Any]:
    """Read and validate a pipeline YAML; ``overrides`` are ``section.key=value`` strings.

    Raises:
        ConfigError: unknown sections or keys (with the closest valid one), missing stage configs.
    """
    cfg = read_yaml_file(path, "pipeline config") or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a pipeline config is a mapping of sections, got {type(cfg).__name__}")
    for item in overrides or []:
        parts, value = parse_override(item)  # the one -o rule (YAML values, errors naming the override)
        node = cfg
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node[parts[-1]] = value
    for section, value in cfg.items():
        if section not in SCHEMA:
            raise ConfigError(f"{path}: unknown section {section!r}.{did_you_mean(section, SCHEMA)} "
                              f"Valid: {', '.join(SCHEMA)}")
        if isinstance(SCHEMA[section], dict):
            for key in value or {}:
                if key not in SCHEMA[section]:
                    raise ConfigError(f"{path}: unknown key {section}.{key}.{did_you_mean(key, SCHEMA[section])} "
                                      f"Valid: {', '.join(SCHEMA[section])}")
    for section in ("data", "teacher", "distill"):
        if not cfg.get(section):
            raise ConfigError(f"{path}: the pipeline needs a {section!r} section")
    for section in ("teacher", "baseline", "distill", "finetune"):
        sub = cfg.get(section) or {}
        if sub.get("enabled", True) and sub and not sub.get("config") and not (section == "teacher"
                                                                               and sub.get("pretrained")):
            raise ConfigError(f"{path}: {section}.config (a training YAML) is required")
    for section in ("distill", "finetune"):
        wants_cache(cfg.get(section) or {}, section)  # true or false, checked before any stage runs
    cfg.setdefault("output_dir", "./output/ssld_pipeline")
    return cfg
