"""``inference.yml``: the preprocessing, input size, class names and post-processing of an exported model.

Post-processing is ``Topk`` or, for a multi-label model, PaddleClas's ``MultiLabelThreshOutput`` (every label
whose sigmoid score reaches ``threshold``). ``Global.output`` says what the graph returns (PaddleClas's
softmax or sigmoid by default, logits with ``Arch.infer_add_softmax: False``; see :mod:`ppssld.export.outputs`).

Every runtime (deploy predictor, PaddleHub module, ONNX check, benchmark) builds its
preprocessing from this file with :func:`ppssld.data.transforms.build_transforms`, the same
module the training-time evaluation uses, so they cannot disagree.
"""
import copy
import logging
import os
from typing import Any, Dict, List, Optional

import yaml

from ppssld.utils.checks import is_number
from ppssld.utils.config import get
from ppssld.data.image import needs_transpose
from ppssld.data.transforms import Compose, build_transforms
from ppssld.utils.errors import ConfigError
from ppssld.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

INFER_CONFIG = "inference.yml"
EVAL_OPS = "DataLoader.Eval.dataset.transform_ops"
INFER_OPS = "Infer.transforms"
DEFAULT_TOPK = 5


def transform_ops(config: Dict[str, Any], source: str = "eval") -> List[Any]:
    """The preprocessing to export: the eval transforms (default) or ``Infer.transforms``.

    The eval dataset turns an HWC result into CHW itself (PaddleClas's convention,
    :func:`ppssld.data.image.needs_transpose`); here that step is written out as a trailing
    ``ToCHWImage`` so the list alone says what the network receives.

    Args:
        config: the full config.
        source: ``"eval"`` (``DataLoader.Eval.dataset.transform_ops``, what accuracy was measured
            with) or ``"infer"`` (``Infer.transforms``).
    Returns:
        A new list of one-key mappings, starting with ``DecodeImage``.
    Raises:
        ConfigError: the section is missing, or the list does not start with DecodeImage.
    """
    where = {"eval": EVAL_OPS, "infer": INFER_OPS}.get(source)
    if where is None:
        raise ConfigError(f"transforms source must be 'eval' or 'infer', got {source!r}")
    ops = get(config, where)
    if not ops:
        other = INFER_OPS if source == "eval" else EVAL_OPS
        raise ConfigError(f"{where} is missing: export needs the preprocessing the model was evaluated with "
                          f"(or choose {other})")
    ops = copy.deepcopy(list(ops))
    chain = build_transforms(ops, where)
    if not chain.decodes:
        raise ConfigError(f"{where} must start with DecodeImage so that every runtime decodes images the same way")
    if needs_transpose(chain):
        ops.append({"ToCHWImage": None})
    return ops


def op_names(ops: List[Any]) -> List[str]:
    """The op names of a transform list."""
    return [op if isinstance(op, str) else next(iter(op)) for op in ops]


def image_shape(config: Dict[str, Any], ops: List[Any]) -> List[int]:
    """The network input ``[C, H, W]``: ``Global.image_shape``, else the final crop/resize size.

    Raises:
        ConfigError: neither is known, or they disagree.
    """
    from_ops = _shape_from_ops(ops)
    given = get(config, "Global.image_shape")
    if given is not None:
        shape = [int(v) for v in given]
        if len(shape) != 3:
            raise ConfigError(f"Global.image_shape must be [C, H, W], got {given!r}")
        if from_ops is not None and shape != from_ops:
            raise ConfigError(f"Global.image_shape {shape} disagrees with the transforms' output size "
                              f"{from_ops}; fix one of them")
        return shape
    if from_ops is None:
        raise ConfigError("set Global.image_shape (e.g. [3, 224, 224]): the transforms end without a fixed size")
    return from_ops


def _shape_from_ops(ops: List[Any]) -> Optional[List[int]]:
    for item in reversed(ops):
        if not isinstance(item, dict):
            continue
        (name, params), = item.items()
        params = params or {}
        if name in ("CropImage", "CropImageAtRatio") or (name == "ResizeImage" and params.get("size") is not None):
            size = params["size"]
            width, height = (size, size) if isinstance(size, int) else (size[0], size[1])
            return [3, int(height), int(width)]
        if name == "ResizeImage":
            return None
    return None


MULTILABEL_POST = "MultiLabelThreshOutput"
ATTRIBUTE_POSTS = ("PersonAttribute", "VehicleAttribute", "TableAttribute")  # PaddleClas's PULC attribute outputs
DEFAULT_THRESHOLD = 0.5


def multilabel_threshold(config: Dict[str, Any]) -> Optional[float]:
    """The score threshold of a multi-label model, None for a single-label one.

    Multi-label as PaddleClas's export decides it (``Global.use_multilabel``, or ``ATTRMetric`` as the first
    eval metric: its exported graph then ends in a sigmoid) or as its ``Infer.PostProcess`` says
    (``MultiLabelThreshOutput`` or a PULC attribute output). The threshold is ``Infer.PostProcess.threshold``
    (default 0.5).

    Raises:
        ConfigError: a threshold that is not a number in [0, 1].
    """
    post = get(config, "Infer.PostProcess") or {}
    post_name = post.get("name") if isinstance(post, dict) else None
    first_metric = (get(config, "Metric.Eval") or [None])[0]
    multilabel = (bool(get(config, "Global.use_multilabel", False)) or post_name in (MULTILABEL_POST,) + ATTRIBUTE_POSTS
                  or (isinstance(first_metric, dict) and "ATTRMetric" in first_metric))
    if not multilabel:
        return None
    value = post.get("threshold", DEFAULT_THRESHOLD) if isinstance(post, dict) else DEFAULT_THRESHOLD
    if not is_number(value) or not 0 <= value <= 1:
        raise ConfigError(f"Infer.PostProcess.threshold must be a number in [0, 1] (the sigmoid score a label needs), "
                          f"got {value!r}")
    return float(value)


def build_infer_config(model_name: str, backbone: str, ops: List[Any], shape: List[int],
                       class_names: Optional[List[str]], class_num: int, topk: int,
                       extra: Optional[Dict[str, Any]] = None, threshold: Optional[float] = None,
                       output: str = "logits") -> Dict[str, Any]:
    """The ``inference.yml`` content (PaddleClas layout: ``Global``, ``PreProcess``, ``PostProcess``).

    Args:
        model_name: e.g. ``MobileNetV3_small_x0_35_ssld``.
        backbone: zoo name.
        ops: the transform list (see :func:`transform_ops`).
        shape: ``[C, H, W]``.
        class_names: names indexed by class id, or None.
        class_num: number of outputs.
        topk: default k of the predictor.
        extra: further ``Global`` entries (source checkpoint, versions ...).
        threshold: a multi-label model's threshold: ``PostProcess`` is then PaddleClas's
            ``MultiLabelThreshOutput`` (labels whose sigmoid score reaches it) instead of ``Topk`` (softmax).
        output: what the graph returns, ``Global.output``: ``logits``, ``softmax`` or ``sigmoid``.
    Returns:
        A plain dict ready for YAML.
    """
    glob: Dict[str, Any] = {"model_name": model_name, "backbone": backbone, "image_shape": list(shape),
                            "class_num": int(class_num), "input_name": "x", "output": output}
    glob.update(extra or {})
    if threshold is not None:
        name, post_cfg = MULTILABEL_POST, {"threshold": float(threshold)}
    else:
        name, post_cfg = "Topk", {"topk": int(max(1, min(topk, class_num)))}
    if class_names is not None:
        post_cfg["label_list"] = list(class_names)
    return {"Global": glob, "PreProcess": {"transform_ops": copy.deepcopy(ops)}, "PostProcess": {name: post_cfg}}


def config_topk(config: Dict[str, Any]) -> int:
    """``Infer.PostProcess.topk`` (default 5)."""
    value = get(config, "Infer.PostProcess.topk")
    return int(value) if value is not None else DEFAULT_TOPK


def write_infer_config(path: str, infer_cfg: Dict[str, Any]) -> None:
    """Write ``inference.yml`` atomically (UTF-8, keys in order)."""
    atomic_write_text(path, yaml.safe_dump(infer_cfg, sort_keys=False, allow_unicode=True))


def read_infer_config(path: str) -> Dict[str, Any]:
    """Read and check an ``inference.yml``.

    Returns:
        The dict, with ``PreProcess.transform_ops`` validated.
    Raises:
        ConfigError: missing file, bad YAML or missing keys.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"{path} does not exist")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            cfg = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict) or not get(cfg, "PreProcess.transform_ops"):
        raise ConfigError(f"{path}: PreProcess.transform_ops is missing; re-export the model")
    build_transforms(cfg["PreProcess"]["transform_ops"], f"{path}:PreProcess.transform_ops")
    return cfg


def preprocessor(infer_cfg: Dict[str, Any]) -> Compose:
    """The preprocessing chain an ``inference.yml`` describes (from :mod:`ppssld.data.transforms`)."""
    return build_transforms(infer_cfg["PreProcess"]["transform_ops"], "inference.yml:PreProcess.transform_ops")


def label_list(infer_cfg: Dict[str, Any]) -> Optional[List[str]]:
    """Class names stored in an ``inference.yml`` (None when the export had none)."""
    names = get(infer_cfg, "PostProcess.Topk.label_list") or get(infer_cfg, f"PostProcess.{MULTILABEL_POST}.label_list")
    return [str(n) for n in names] if names else None


def infer_threshold(infer_cfg: Dict[str, Any]) -> Optional[float]:
    """The ``MultiLabelThreshOutput`` threshold of an ``inference.yml``; None for a top-k (softmax) model."""
    post = get(infer_cfg, "PostProcess") or {}
    if MULTILABEL_POST not in post:
        return None
    value = (post[MULTILABEL_POST] or {}).get("threshold", DEFAULT_THRESHOLD)
    if not is_number(value) or not 0 <= value <= 1:
        raise ConfigError(f"inference.yml: PostProcess.{MULTILABEL_POST}.threshold must be a number in [0, 1], "
                          f"got {value!r}")
    return float(value)


def default_topk(infer_cfg: Dict[str, Any]) -> int:
    """The exported default k."""
    return int(get(infer_cfg, "PostProcess.Topk.topk") or DEFAULT_TOPK)
