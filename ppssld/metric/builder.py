"""Build the metrics listed in ``Metric.Train`` / ``Metric.Eval``."""
import logging
from typing import Any, Dict, List, Tuple

from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import METRICS, component_entries

logger = logging.getLogger(__name__)


def _entries(cfg_list: Any, where: str) -> List[Tuple[str, Dict[str, Any]]]:
    return component_entries(cfg_list, where, "[{TopkAcc: {topk: [1, 5]}}]")


def _build_one(name: str, params: Dict[str, Any], where: str) -> Any:
    METRICS.check_kwargs(name, params, where)
    try:
        return METRICS.build(name, params, where)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def build_metrics(cfg_list: Any, where: str = "Metric.Eval") -> list:
    """Build metric objects from ``[{TopkAcc: {topk: [1, 5]}}, ...]``.

    Args:
        cfg_list: the YAML list (not mutated).
        where: config location for error messages.
    Returns:
        Metric objects (``reset``, ``update``, ``counts``, ``set_counts``, ``summary``).
    Raises:
        ConfigError: bad structure, unknown metric or parameter, bad value.
    """
    metrics = [_build_one(name, params, f"{where}[{i}].{name}")
               for i, (name, params) in enumerate(_entries(cfg_list, where))]
    keys = [k for m in metrics for k in summary_keys(m)]
    if len(set(keys)) != len(keys):
        logger.warning("%s: several metrics report the same keys %s; later ones overwrite earlier ones",
                       where, sorted(k for k in set(keys) if keys.count(k) > 1))
    return metrics


def summary_keys(metric: Any) -> List[str]:
    """The keys ``metric.summary()`` reports."""
    if hasattr(metric, "topk"):
        return [f"top{k}" for k in metric.topk]
    return list(getattr(metric, "summary_keys", ()))


def primary_key(metrics: List[Any]) -> str:
    """The result key checkpoints are ranked by: the first metric's main value (PaddleClas ranks by its
    first metric), ``top1`` for top-k metrics and when there is none."""
    if not metrics or hasattr(metrics[0], "topk"):
        return "top1" if not metrics else f"top{metrics[0].topk[0]}"
    return metrics[0].primary_key


def validate_metric_config(cfg_list: Any, where: str = "Metric.Eval") -> None:
    """Check a metric list (structure, names, parameters, values); metrics hold no tensors."""
    for i, (name, params) in enumerate(_entries(cfg_list, where)):
        _build_one(name, params, f"{where}[{i}].{name}")
