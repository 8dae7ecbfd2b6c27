"""Floor 2: accumulating metrics. Importing this package registers them in METRICS."""
from ppssld.metric import multilabel, multilabel_map
from ppssld.metric import topk
from ppssld.metric.builder import build_metrics, primary_key, validate_metric_config
from ppssld.metric.topk import DistillationTopkAcc, TopkAcc, correct_counts

__all__ = ["multilabel", "multilabel_map", "topk", "build_metrics", "primary_key", "validate_metric_config",
           "DistillationTopkAcc", "TopkAcc", "correct_counts"]
