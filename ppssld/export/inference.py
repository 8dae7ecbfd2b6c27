"""Export a trained model: ``<name>_infer/`` (Paddle Inference + inference.yml), ``<name>_pretrained.pdparams``.

``name`` defaults to ``<Backbone>_ssld`` (e.g. ``MobileNetV3_small_x0_35_ssld``), the suffix
PaddleClas uses for its SSLD releases. The graph ends as PaddleClas's export ends it: softmax (sigmoid for a
multi-label model), or logits with ``Arch.infer_add_softmax: False`` (:mod:`ppssld.export.outputs`).
"""
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import paddle
import paddle.nn as nn

from ppssld import __version__
from ppssld.export.infer_config import (INFER_CONFIG, build_infer_config, config_topk, image_shape,
                                        multilabel_threshold, transform_ops, write_infer_config)
from ppssld.export.labels import config_class_names
from ppssld.export.outputs import ScoredModel, export_activation
from ppssld.export.student import build_export_model, count_classes, reparameterize, save_pretrained
from ppssld.slim.apply import float_forward
from ppssld.slim.settings import quant_settings
from ppssld.utils.errors import ConfigError
from ppssld.utils.io import ensure_dir, make_temp_dir, publish_dir
from ppssld.utils.quiet import PIR_OUT_TENSOR, drop_native_stderr_lines

logger = logging.getLogger(__name__)

SSLD_SUFFIX = "_ssld"


@dataclass
class ExportResult:
    """Paths an export wrote.

    Attributes:
        name: base name (``MobileNetV3_small_x0_35_ssld``).
        model_dir: ``<save_dir>/<name>_infer``.
        pretrained: ``<save_dir>/<name>_pretrained.pdparams`` (``.safetensors`` twin beside it).
        infer_config: the ``inference.yml`` content.
        hub_dir: the PaddleHub module folder, if written.
        onnx: the ONNX file, if written.
        int8_dir: ``<save_dir>/<name>_int8_infer`` of a ``Slim.quant`` (quantization-aware) student, if written.
    """
    name: str
    model_dir: str
    pretrained: str
    infer_config: Dict[str, Any]
    hub_dir: Optional[str] = None
    onnx: Optional[str] = None
    int8_dir: Optional[str] = None


def save_inference_model(layer: nn.Layer, shape: List[int], prefix: str) -> None:
    """Trace ``layer`` to a static graph with input ``x`` of ``[None] + shape`` and save it.

    Paddle 3.x writes ``prefix.json`` + ``prefix.pdiparams``; Paddle 2.x ``prefix.pdmodel`` + ``.pdiparams``.
    """
    spec = [paddle.static.InputSpec(shape=[None] + list(shape), dtype="float32", name="x")]
    try:
        static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    except TypeError:  # Paddle releases without the full_graph switch
        static = paddle.jit.to_static(layer, input_spec=spec)
    with drop_native_stderr_lines(PIR_OUT_TENSOR):
        paddle.jit.save(static, prefix)


def export_model(config: Dict[str, Any], weights: Optional[str] = None, save_dir: Optional[str] = None,
                 name: Optional[str] = None, transforms_from: str = "eval", hub_name: Optional[str] = None,
                 with_hub: bool = True, with_onnx: bool = False, with_int8: Optional[bool] = None) -> ExportResult:
    """Export the inference model of ``config`` from a checkpoint.

    Args:
        config: the full (loaded) config.
        weights: checkpoint (default ``Global.pretrained_model``); DistillationModel checkpoints
            give the ``Arch.infer_model_name`` model's weights, the teacher's are ignored.
        save_dir: output folder (default ``Global.save_inference_dir``, else ``./inference``).
        name: base name (default ``<Backbone>_ssld``).
        transforms_from: ``"eval"`` or ``"infer"`` (see :func:`ppssld.export.infer_config.transform_ops`).
        hub_name: PaddleHub module name (default: ``name`` lower-cased).
        with_hub: also write the PaddleHub module to ``<save_dir>/hub/<hub_name>/``.
        with_onnx: also convert to ``<model_dir>/inference.onnx`` (needs paddle2onnx).
        with_int8: also write ``<save_dir>/<name>_int8_infer/`` with the ranges quantization-aware training
            learned (:mod:`ppssld.export.qad`); default: when the config has ``Slim.quant``.
    Returns:
        What was written.
    """
    ops = transform_ops(config, transforms_from)
    shape = image_shape(config, ops)
    activation = export_activation(config)
    strict = bool((config.get("Global") or {}).get("strict_load", True))
    layer, target, source = build_export_model(config, weights, strict=strict)
    with float_forward(layer):
        class_num = count_classes(layer, shape)
    names = config_class_names(config, class_num)
    name = name or f"{target.backbone}{SSLD_SUFFIX}"
    save_dir = save_dir or (config.get("Global") or {}).get("save_inference_dir") or "./inference"
    ensure_dir(save_dir)  # a file in the way: an OutputError naming it
    pretrained = os.path.join(save_dir, f"{name}_pretrained.pdparams")
    save_pretrained(layer, pretrained)
    fused = reparameterize(layer)
    if fused:
        logger.info("re-parameterised %d blocks for inference", fused)
    extra = {"source_weights": os.path.basename(source), "exported_by": f"ppssld {__version__}",
             "paddle_version": paddle.__version__,
             "transforms_from": {"eval": "DataLoader.Eval.dataset.transform_ops",
                                 "infer": "Infer.transforms"}[transforms_from]}
    if target.key:
        extra["distillation_model"] = target.key
    threshold = multilabel_threshold(config)
    infer_cfg = build_infer_config(name, target.backbone, ops, shape, names, class_num, config_topk(config), extra,
                                   threshold, activation)
    model_dir = os.path.join(save_dir, f"{name}_infer")
    tmp_dir = make_temp_dir(model_dir)
    try:
        graph = ScoredModel(layer, activation)
        graph.eval()
        with float_forward(layer):  # a Slim.quant student: its float graph (ONNX Runtime quantizes it below)
            save_inference_model(graph, shape, os.path.join(tmp_dir, "inference"))
        write_infer_config(os.path.join(tmp_dir, INFER_CONFIG), infer_cfg)
        publish_dir(tmp_dir, model_dir)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("wrote %s (%s)", model_dir, ", ".join(sorted(os.listdir(model_dir))))
    result = ExportResult(name, model_dir, pretrained, infer_cfg)
    if with_onnx:
        from ppssld.export.onnx import export_onnx

        result.onnx = export_onnx(model_dir)
    settings = quant_settings(config)
    if with_int8 if with_int8 is not None else settings is not None:
        from ppssld.export.qad import export_qad_int8

        if settings is None:
            raise ConfigError("an int8 export of the trained ranges needs Slim.quant in the config (a quantization-"
                              "aware trained checkpoint); for a float checkpoint use deploy/slim/quant_post_static.py")
        result.int8_dir = export_qad_int8(config, layer, model_dir, name, save_dir, settings, source).model_dir
    if with_hub:
        from ppssld.export.hub import write_hub_module

        result.hub_dir = write_hub_module(model_dir, hub_name or name.lower(), os.path.join(save_dir, "hub"))
    return result
