"""The int8 model of a quantization-aware trained student (``Slim.quant``): ``<name>_int8_infer/``.

The student's float graph is exported and converted to ONNX as for post-training quantization
(:mod:`ppssld.export.quantize`), and ONNX Runtime quantizes it with the scheme training simulated
(:mod:`ppssld.slim.fake_quant`), so the weights are rounded exactly as in training, and with the activation
ranges training learned: each quantized Conv2D / Linear is found in the pre-processed graph by its weight
(the initializer keeps the Paddle parameter name, ``ConvBnFusion_W_<name>`` once a BatchNorm is folded in),
and the scale and zero point of its input and output tensors are given to ONNX Runtime as
``TensorQuantOverrides``. Tensors ONNX Runtime quantizes that no fake-quant layer covered (a functional
``matmul``, say) take calibrated ranges instead; their count is logged and written to ``inference.yml``.
"""
import logging
import os
import re
import tempfile
from typing import Any, Dict, List, Set, Tuple

import numpy as np
import paddle.nn as nn

from ppssld.export.infer_config import INFER_CONFIG, read_infer_config
from ppssld.export.onnx import ONNX_FILE, OnnxUnavailable, export_onnx
from ppssld.export.quantize import (QUANT_OPS, QUANT_OPSET, TRAIN_DATASET, Int8Result, QuantizationError,
                                    calibration_batches, calibration_images, publish_int8, quantization_status)
from ppssld.slim.apply import QuantPoint, quant_points
from ppssld.slim.fake_quant import WEIGHT_QMAX, WEIGHT_QMAX_REDUCED
from ppssld.slim.settings import QuantSettings
from ppssld.utils.config import get

logger = logging.getLogger(__name__)

DEFAULT_QAD_CALIB_IMAGES = 32  # only for tensors no fake-quant layer covered (none in the zoo's CNNs)
_FUSED_WEIGHT = re.compile(r"^(?:\w+?Fusion_W_)+")


def _qparams(quantizer: Any, where: str) -> Dict[str, Any]:
    if not quantizer.is_ready():
        raise QuantizationError(f"{where}: its activation quantizer holds no trained range: the checkpoint is not "
                                f"a Slim.quant one (train with Slim.quant first, or quantize the float model with "
                                f"deploy/slim/quant_post_static.py)")
    scale, zero = quantizer.qparams()
    return {"scale": np.array(scale.numpy(), dtype=np.float32),
            "zero_point": np.array(round(float(zero.numpy())), dtype=np.uint8)}


def trained_overrides(points: List[QuantPoint], prepared_onnx: str) -> Tuple[Dict[str, list], List[str]]:
    """``(TensorQuantOverrides, the quantizable nodes no point covers)`` for ``prepared_onnx``.

    Raises:
        QuantizationError: a quantized layer missing from the graph, or a tensor the simulation rounds twice or
            not at all where ONNX Runtime rounds once (the simulation would not be the int8 model).
    """
    import onnx

    graph = onnx.load(prepared_onnx, load_external_data=False).graph
    by_weight = {_FUSED_WEIGHT.sub("", node.input[1]): node for node in graph.node
                 if node.op_type in QUANT_OPS and len(node.input) > 1}
    overrides: Dict[str, list] = {}
    used: Set[str] = set()
    for point in points:
        node = by_weight.get(point.weight_name)
        if node is None:
            raise QuantizationError(f"quantized layer {point.path} (weight {point.weight_name}) is not a "
                                    f"{'/'.join(QUANT_OPS)} node of the ONNX graph: cannot give it its trained ranges")
        used.add(node.name or node.output[0])
        overrides[node.output[0]] = [_qparams(point.output, point.path)]
    outputs = set(overrides)
    for point in points:
        node = by_weight[point.weight_name]
        source = node.input[0]
        if point.input is None and source not in outputs:
            raise QuantizationError(f"{point.path}: training took its input as already quantized, but in the ONNX "
                                    f"graph it reads {source!r}, which no quantized layer writes")
        if point.input is not None:
            if source in outputs:
                raise QuantizationError(f"{point.path}: training rounds its input again, but in the ONNX graph it "
                                        f"reads {source!r}, already uint8")
            overrides.setdefault(source, [_qparams(point.input, point.path)])
    missed = [node.name or node.output[0] for node in graph.node
              if node.op_type in QUANT_OPS and (node.name or node.output[0]) not in used]
    return overrides, missed


def export_qad_int8(config: Dict[str, Any], layer: nn.Layer, fp32_dir: str, name: str, save_dir: str,
                    settings: QuantSettings, source: str, fmt: str = "qoperator",
                    calib_images: int = DEFAULT_QAD_CALIB_IMAGES) -> Int8Result:
    """Write ``<save_dir>/<name>_int8_infer/`` for the quantization-aware trained ``layer``.

    Args:
        config: the full config (``DataLoader.Train.dataset``: calibration images for uncovered tensors).
        layer: the student with its trained quantizers, whose float graph ``fp32_dir`` holds.
        fp32_dir: the fp32 export folder of ``layer`` (``<name>_infer/``).
        name: base name (``<Backbone>_ssld``).
        save_dir: output folder.
        settings: ``Slim.quant``.
        source: the checkpoint, for ``inference.yml``.
        fmt: ``qoperator`` or ``qdq``.
        calib_images: training images for the uncovered tensors.
    Returns:
        What was written.
    """
    reason = quantization_status()
    if reason:
        raise OnnxUnavailable(reason)
    points = quant_points(layer)
    if not points:
        raise QuantizationError("the export model holds no fake-quant layer: Slim.quant is not applied")
    if {p.weight_qmax for p in points} != {WEIGHT_QMAX_REDUCED if settings.reduce_range else WEIGHT_QMAX}:
        raise QuantizationError(f"the student's weights were rounded to {sorted({p.weight_qmax for p in points})} "
                                f"levels but Slim.quant.reduce_range is {settings.reduce_range}")
    seed = int(get(config, "Global.seed", 0))
    paths = calibration_images(config, int(calib_images), seed)
    infer_cfg = read_infer_config(os.path.join(fp32_dir, INFER_CONFIG))
    batches = calibration_batches(paths, infer_cfg, 16)
    info: Dict[str, Any] = {
        "activations": f"uint8, ranges trained by Slim.quant ({settings.method}: moving-average min/max)",
        "source_weights": os.path.basename(source), "calibration_images": len(paths),
        "calibration_list": str(get(config, f"{TRAIN_DATASET}.cls_label_path", ""))}
    missed: List[str] = []

    def overrides_for(prepared: str) -> Dict[str, list]:
        overrides, uncovered = trained_overrides(points, prepared)
        missed.extend(uncovered)
        info.update({"trained_tensors": len(overrides), "calibrated_nodes": len(uncovered)})  # into inference.yml
        return overrides

    with tempfile.TemporaryDirectory(prefix="ppssld-qad-") as work:
        fp32_onnx = export_onnx(fp32_dir, out_path=os.path.join(work, ONNX_FILE), opset=QUANT_OPSET)
        final, nodes, infer_cfg = publish_int8(fp32_onnx, infer_cfg, name, save_dir, batches, fmt, "minmax", info,
                                               overrides_for, reduce_range=settings.reduce_range)
        fp32_bytes = os.path.getsize(fp32_onnx)
    if missed:
        logger.warning("int8 export: %d %s node(s) that no fake-quant layer trained (%s ...) take ranges calibrated "
                       "on %d training images", len(missed), "/".join(QUANT_OPS), missed[0], len(paths))
    logger.info("wrote %s (%d quantized nodes; %d tensors with their trained ranges)", final, nodes,
                info["trained_tensors"])
    return Int8Result(final, infer_cfg, fp32_bytes, os.path.getsize(os.path.join(final, ONNX_FILE)))
