"""Floor 2: accumulating metrics. Importing this package registers them in METRICS."""
from ppssld.metric import topk
from ppssld.metric.builder import build_metrics, validate_metric_config
from ppssld.metric.topk import DistillationTopkAcc, TopkAcc, correct_counts

__all__ = ["topk", "build_metrics", "validate_metric_config", "DistillationTopkAcc", "TopkAcc",
           "correct_counts"]
