"""PaddleClas's hyper-parameter search (``tools/search_strategy.py`` and the PULC ``search.yaml`` files).

A search file names a ``base_config_file`` and a ``search_dict``: a list of stages, each with a
``search_key``, the ``replace_config`` paths it sets (``DataLoader.Train.dataset.transform_ops.1.
ResizeImage.size``) and the ``search_values`` to try. The search is greedy, in file order: every value
of a stage is trained ``search_times`` times on the base config plus the best values of the stages
before it, and the value with the highest mean eval metric wins (PaddleClas keeps the first value unless
a later one is strictly better than it and than 0). Then, with a ``teacher`` section, ``skl-ugi`` trains
each teacher name (``Arch.name``, dropping the overrides that contain a ``rm_keys`` entry) and points
``Arch.models.0.Teacher`` at the best one's ``best_model``; ``udml`` passes the best ``lr_mult_list`` to
the teacher. Finally the ``distill_config_file`` is trained with every chosen value, each override's text
rewritten by ``final_replace`` (``Arch.lr_mult_list`` -> ``Arch.models.1.Student.lr_mult_list``). Without a
``teacher`` section there is no final run, as in PaddleClas.

Trial configs are fresh dicts from :func:`ppssld.utils.config.load_config` (base file + overrides); nothing
shared is mutated. Relative config paths are tried from the working directory, then from every folder
above the search file (PaddleClas writes them from its root); a path that exists nowhere but whose file
name lies beside the search file (two PULC search files name folders PaddleClas has since renamed) is
taken from there, with a warning.
"""
import copy
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from ppssld.utils.checks import is_int
from ppssld.utils.config import apply_override, check_keys, load_config, read_yaml_file
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

FILE_KEYS = ("base_config_file", "distill_config_file", "gpus", "output_dir", "search_times", "search_dict",
             "teacher", "final_replace")
STAGE_KEYS = ("search_key", "replace_config", "search_values")
TEACHER_KEYS = ("algorithm", "rm_keys", "search_values")
ALGORITHMS = ("skl-ugi", "udml")


@dataclass
class Stage:
    """One ``search_dict`` entry."""
    key: str
    paths: List[str]
    values: List[Any]


@dataclass
class Trial:
    """One training run of the search: ``load_config(config_file, overrides)``."""
    stage: str            # a search_key, ``teacher`` or ``final``
    value: Any
    repeat: int
    config_file: str
    overrides: List[str]
    output_dir: str

    def load(self, extra: Sequence[str] = ()) -> Dict[str, Any]:
        """A new config dict for this trial; ``extra`` overrides (device, data paths) go first."""
        return load_config(self.config_file, list(extra) + self.overrides)


@dataclass
class SearchPlan:
    """A validated search file."""
    path: str
    base_config: str
    distill_config: Optional[str]
    output_dir: str
    search_times: int
    stages: List[Stage]
    algorithm: Optional[str] = None
    teacher_values: List[Any] = field(default_factory=list)
    rm_keys: List[str] = field(default_factory=list)
    final_replace: Dict[str, str] = field(default_factory=dict)


def _override(path: str, value: Any) -> str:
    return f"{path}={json.dumps(value)}"  # JSON is YAML: the override parser reads it back exactly


def _folder(key: str, value: Any, repeat: int) -> str:
    """PaddleClas's trial folder ``<key>_<value>_<j>``, dots (and brackets, commas, spaces) as one ``_``."""
    return re.sub(r"_+", "_", re.sub(r"[^\w\-]+", "_", f"{key}_{value}_{repeat}".replace(".", "_")))


def _where(path: str, key: str) -> str:
    return f"{path}: {key}"


def _resolve(path: str, search_file: str, key: str) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{_where(search_file, key)} must be a config file path, got {path!r}")
    tried = [path] if os.path.isabs(path) else [os.path.abspath(path)]
    folder = os.path.dirname(os.path.abspath(search_file))
    while not os.path.isabs(path):
        tried.append(os.path.join(folder, path))
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for candidate in tried:
        if os.path.isfile(candidate):
            return candidate
    beside = os.path.join(os.path.dirname(os.path.abspath(search_file)), os.path.basename(path))
    if os.path.isfile(beside):  # PaddleClas renamed PULC folders (vehicle_attr, text_direction) after writing them
        logger.warning("%s: %s %r does not exist; using %s, the file of that name beside the search file",
                       search_file, key, path, beside)
        return beside
    raise ConfigError(f"{_where(search_file, key)}: config file {path!r} not found (tried it from the working "
                      f"directory and from every folder above {search_file}); run from the PaddleClas root or give "
                      f"an absolute path")


def _stage(entry: Any, index: int, path: str, base: Dict[str, Any]) -> Stage:
    where = _where(path, f"search_dict[{index}]")
    check_keys(entry, STAGE_KEYS, where)
    missing = [k for k in STAGE_KEYS if k not in entry]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)} (each entry needs search_key, replace_config "
                          f"and search_values)")
    key, paths, values = entry["search_key"], entry["replace_config"], entry["search_values"]
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{where}.search_key must be a name, got {key!r}")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"{where} ({key}).replace_config must be a list of config paths, got {paths!r}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where} ({key}).search_values must be a non-empty list, got {values!r}")
    for n, dotted in enumerate(paths):
        try:
            apply_override(copy.deepcopy(base), _override(dotted, values[0]))
        except ConfigError as exc:
            raise ConfigError(f"{where} ({key}).replace_config[{n}]: {dotted!r} is not a path of the base config: "
                              f"{exc}") from exc
    return Stage(key, list(paths), list(values))


def load_search(path: str) -> SearchPlan:
    """Read and validate a PaddleClas ``search.yaml``.

    Raises:
        ConfigError: unreadable file, unknown key (with the closest one), missing key, a config file that
            does not exist, or a ``replace_config`` path the base config does not have (named).
    """
    raw = read_yaml_file(path, "search file")
    check_keys(raw, FILE_KEYS, path)
    for key in ("base_config_file", "output_dir", "search_dict"):
        if raw.get(key) is None:
            raise ConfigError(f"{_where(path, key)} is missing (a search file needs base_config_file, output_dir "
                              f"and search_dict)")
    base_file = _resolve(raw["base_config_file"], path, "base_config_file")
    base = load_config(base_file)
    times = raw.get("search_times", 1)
    if not is_int(times) or times < 1:
        raise ConfigError(f"{_where(path, 'search_times')} must be a positive int, got {times!r}")
    if not isinstance(raw["search_dict"], list):
        raise ConfigError(f"{_where(path, 'search_dict')} must be a list of stages, got {raw['search_dict']!r}")
    plan = SearchPlan(path, base_file, None, str(raw["output_dir"]), times,
                      [_stage(e, i, path, base) for i, e in enumerate(raw["search_dict"])])
    keys = [s.key for s in plan.stages]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{_where(path, 'search_dict')}: search_key values repeat ({keys}); each must be unique")
    teacher = raw.get("teacher")
    if teacher is not None:
        where = _where(path, "teacher")
        check_keys(teacher, TEACHER_KEYS, where)
        plan.algorithm = teacher.get("algorithm", "skl-ugi")
        if plan.algorithm not in ALGORITHMS:
            raise ConfigError(f"{where}.algorithm must be one of {', '.join(ALGORITHMS)}, got {plan.algorithm!r}")
        if plan.algorithm == "skl-ugi":
            plan.teacher_values = teacher.get("search_values") or []
            if not isinstance(plan.teacher_values, list) or not plan.teacher_values:
                raise ConfigError(f"{where}.search_values: skl-ugi needs a list of teacher model names")
            plan.rm_keys = teacher.get("rm_keys") or []
            if not isinstance(plan.rm_keys, list) or not all(isinstance(k, str) for k in plan.rm_keys):
                raise ConfigError(f"{where}.rm_keys must be a list of config paths, got {plan.rm_keys!r}")
        if raw.get("distill_config_file") is None:
            raise ConfigError(f"{_where(path, 'distill_config_file')} is missing: the teacher section ends in a "
                              f"distillation run of that config")
        plan.distill_config = _resolve(raw["distill_config_file"], path, "distill_config_file")
    replace = raw.get("final_replace") or {}
    if not isinstance(replace, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in replace.items()):
        raise ConfigError(f"{_where(path, 'final_replace')} must map config paths to config paths, got {replace!r}")
    plan.final_replace = dict(replace)
    if raw.get("gpus") is not None:
        logger.info("%s: gpus %s is PaddleClas's launcher setting; ppssld runs each trial on Global.device",
                    path, raw["gpus"])
    return plan


Evaluate = Callable[[Trial], float]


def _best(values: List[Any], means: List[float]) -> Any:
    """PaddleClas's choice: the first value unless a later mean is strictly higher (and above 0)."""
    best, best_mean = values[0], 0.0
    for value, mean in zip(values, means):
        if mean > best_mean:
            best, best_mean = value, mean
    return best


def _search(key: str, paths: List[str], values: List[Any], times: int, config_file: str, fixed: List[str],
            out: str, evaluate: Evaluate, trials: List[Trial]) -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    means = []
    for value in values:
        scores = []
        for repeat in range(times):
            folder = os.path.join(out, _folder(key, value, repeat))
            trial = Trial(key, value, repeat, config_file, fixed + [_override(p, value) for p in paths]
                          + [_override("Global.output_dir", folder)], folder)
            trials.append(trial)
            scores.append(float(evaluate(trial)))
        results[str(value)] = scores
        means.append(sum(scores) / len(scores))
    results["best"] = _best(values, means)
    logger.info("search %s: %s -> best %r", key, {str(v): round(m, 6) for v, m in zip(values, means)},
                results["best"])
    return results


def run_search(plan: SearchPlan, evaluate: Evaluate) -> Dict[str, Any]:
    """Run the search in PaddleClas's order, calling ``evaluate(trial)`` for each trial's eval metric.

    Returns:
        ``{"results": {search_key: {str(value): [metrics], "best": value}, ...}, "trials": [Trial, ...],
        "final": the final Trial or None}``.
    """
    trials: List[Trial] = []
    results: Dict[str, Any] = {}
    fixed: List[str] = []
    for stage in plan.stages:
        res = _search(stage.key, stage.paths, stage.values, plan.search_times, plan.base_config, fixed,
                      plan.output_dir, evaluate, trials)
        results[stage.key] = res
        fixed = fixed + [_override(p, res["best"]) for p in stage.paths]
    if plan.algorithm is None:
        return {"results": results, "trials": trials, "final": None}
    if plan.algorithm == "skl-ugi":
        kept = [o for o in fixed if not any(k in o for k in plan.rm_keys)]
        res = _search("teacher", ["Arch.name"], plan.teacher_values, 1, plan.base_config, kept, plan.output_dir,
                      evaluate, trials)
        results["teacher"] = res
        best = res["best"]
        weights = os.path.join(plan.output_dir, _folder("teacher", best, 0), str(best), "best_model")
        fixed = fixed + [_override("Arch.models.0.Teacher.name", best),
                         _override("Arch.models.0.Teacher.pretrained", weights)]
    elif "lr_mult_list" in results:
        fixed = fixed + [_override("Arch.models.0.Teacher.lr_mult_list", results["lr_mult_list"]["best"])]
    folder = os.path.join(plan.output_dir, "search_res")
    overrides = fixed + [_override("Global.output_dir", folder)]
    for old, new in plan.final_replace.items():
        overrides = [o.replace(old, new) for o in overrides]
    final = Trial("final", None, 0, plan.distill_config, overrides, folder)
    trials.append(final)
    evaluate(final)
    return {"results": results, "trials": trials, "final": final}


def train_trial(trial: Trial, extra: Sequence[str] = ()) -> float:
    """Train one trial with ppssld's trainer; its best eval metric (PaddleClas's ``best metric`` log value).

    Raises:
        ConfigError: the trial never evaluates (nothing to compare).
    """
    from ppssld.engine.builder import build_trainer

    logger.info("search trial %s=%r (run %d): %s -o %s", trial.stage, trial.value, trial.repeat, trial.config_file,
                " ".join(trial.overrides))
    result = build_trainer(trial.load(extra)).fit()
    if result.get("best_metric") is None:
        raise ConfigError(f"search trial {trial.stage}={trial.value!r} ({trial.config_file}) never evaluated: the "
                          f"search compares eval metrics, so keep Global.eval_during_train on and DataLoader.Eval set")
    return float(result["best_metric"])


def build_trial(trial: Trial, extra: Sequence[str] = ()) -> float:
    """Dry run of one trial: load, validate and build it (the final distillation run is only validated, its
    teacher's weights coming from a teacher trial); returns 0.0, so the search keeps each stage's first value."""
    from ppssld.engine.builder import build_trainer, validate

    config = trial.load(extra)
    validate(config)
    if trial.stage != "final":
        build_trainer(config)
    logger.info("dry run: %s=%r (run %d) builds: %s -o %s", trial.stage, trial.value, trial.repeat,
                trial.config_file, " ".join(trial.overrides))
    return 0.0


def summary(outcome: Dict[str, Any]) -> Dict[str, Any]:
    """A JSON-able record of a search: per-stage metrics and bests, and the final run's overrides."""
    final = outcome["final"]
    return {"results": outcome["results"],
            "trials": [{"stage": t.stage, "value": t.value, "repeat": t.repeat, "config": t.config_file,
                        "output_dir": t.output_dir} for t in outcome["trials"]],
            "final": None if final is None else {"config": final.config_file, "overrides": final.overrides}}
