"""Post-training static int8 quantization: ``<name>_int8_infer/`` (ONNX Runtime; int8 ONNX + inference.yml).

The student is exported as usual (Paddle graph, then ONNX through paddle2onnx), calibrated on training images
preprocessed exactly as ``inference.yml`` says (the eval transforms, not the training augmentation), and
quantized by ONNX Runtime's static quantization: int8 weights per output channel, uint8 activations from
min/max ranges, for Conv, MatMul and Gemm (the final softmax / sigmoid stays float, so scores are not
rounded to 1/255). The folder runs in ppssld's predictor, PaddleClas's ``predict_cls.py`` with
``Global.use_onnx: True`` and the PaddleHub module. Paddle's own ``paddle.quantization`` could not be used on
Paddle 3.3.1: see ``docs/export_and_deploy.md``.
"""
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ppssld.data.datasets.imagenet import build_dataset
from ppssld.data.image import read_bytes, transform_image
from ppssld.export.infer_config import INFER_CONFIG, preprocessor, read_infer_config, write_infer_config
from ppssld.export.onnx import ONNX_FILE, OnnxUnavailable, export_onnx
from ppssld.utils.config import get
from ppssld.utils.errors import ConfigError, DataError, PpssldError
from ppssld.utils.io import make_temp_dir, publish_dir

logger = logging.getLogger(__name__)

INT8_SUFFIX = "_int8"
DEFAULT_CALIB_IMAGES = 512
FORMATS = ("qoperator", "qdq")
CALIBRATIONS = ("minmax", "percentile", "entropy")
QUANT_OPS = ("Conv", "MatMul", "Gemm")
INT8_NODES = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "DequantizeLinear")
TRAIN_DATASET = "DataLoader.Train.dataset"
QUANT_OPSET = 13  # per-channel DequantizeLinear (its axis attribute) needs opset 13


class QuantizationError(PpssldError, ValueError):
    """A model that cannot be quantized, or a folder that claims int8 and is not."""


def quantization_status() -> Optional[str]:
    """None when ONNX Runtime's quantization imports, else why not (what to install)."""
    try:
        import onnxruntime.quantization  # noqa: F401  (needs ml_dtypes and onnx)
    except ImportError as exc:
        return (f"ONNX Runtime's quantization is not importable ({exc}); install the onnx extra: "
                f"pip install -e .[onnx] (paddle2onnx, onnxruntime, ml_dtypes)")
    return None


def calibration_images(config: Dict[str, Any], count: int, seed: int) -> List[str]:
    """``count`` images of ``DataLoader.Train.dataset``'s list, a seeded sample without repeats (all when fewer).

    Raises:
        ConfigError: no train dataset or a count below 1. DataError: a list with no image.
    """
    if count < 1:
        raise ConfigError(f"the calibration image count must be at least 1, got {count}")
    cfg = get(config, TRAIN_DATASET)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{TRAIN_DATASET} is missing: calibration takes its images from the training list")
    dataset = build_dataset(cfg, TRAIN_DATASET)
    where = cfg.get("cls_label_path", TRAIN_DATASET)
    if len(dataset) == 0:
        raise DataError(f"calibration list {where} holds no image: give a training list with images "
                        f"({TRAIN_DATASET}.cls_label_path)")
    if len(dataset) < count:
        logger.warning("calibration: %s holds %d images, fewer than the %d asked for; all are used", where,
                       len(dataset), count)
    order = np.random.RandomState(seed).permutation(len(dataset))[:count]
    return [dataset.full_path(int(i)) for i in sorted(order)]


def calibration_batches(paths: Sequence[str], infer_cfg: Dict[str, Any], batch_size: int) -> List[np.ndarray]:
    """The images as the exported model receives them (``inference.yml``'s preprocessing), in batches.

    Raises:
        ImageDecodeError / DataError: an image that cannot be read, named.
    """
    chain = preprocessor(infer_cfg)
    arrays = [transform_image(read_bytes(p), chain) for p in paths]
    step = max(1, int(batch_size))
    return [np.stack(arrays[i:i + step]) for i in range(0, len(arrays), step)]


def _reader(batches: List[np.ndarray], input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    return _Batches()


def int8_node_count(onnx_path: str) -> int:
    """How many quantized nodes (``QLinearConv``, ``DequantizeLinear`` ...) an ONNX graph holds."""
    import onnx

    return sum(node.op_type in INT8_NODES for node in onnx.load(onnx_path, load_external_data=False).graph.node)


def quantize_onnx(fp32_path: str, out_path: str, batches: List[np.ndarray], fmt: str = "qoperator",
                  calibration: str = "minmax",
                  overrides_for: Optional[Callable[[str], Dict[str, list]]] = None, reduce_range: bool = False) -> int:
    """Statically quantize ``fp32_path`` into ``out_path`` (per-channel int8 weights, uint8 activations).

    ``calibration``: how activation ranges come from the batches: ``minmax`` (the extremes), ``percentile``
    (the 99.999th percentile of |x|) or ``entropy`` (KL divergence between float and int8 histograms).
    ``overrides_for``: given the pre-processed graph's path (the one quantized: BatchNorm folded into the
    convolutions), the ``TensorQuantOverrides`` (tensor -> ``[{"scale", "zero_point"}]``) that replace the
    calibrated ranges of those tensors (the ranges quantization-aware training learned). ``reduce_range``: 7-bit
    weights (``[-64, 64]``), which no x86 kernel saturates (:data:`ppssld.slim.fake_quant.WEIGHT_QMAX_REDUCED`).

    Returns:
        The number of quantized nodes written.
    Raises:
        OnnxUnavailable: ONNX Runtime's quantization missing. QuantizationError: nothing could be quantized.
    """
    reason = quantization_status()
    if reason:
        raise OnnxUnavailable(reason)
    if fmt not in FORMATS:
        raise ConfigError(f"quantization format must be one of {list(FORMATS)}, got {fmt!r}")
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"calibration method must be one of {list(CALIBRATIONS)}, got {calibration!r}")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    work = tempfile.mkdtemp(prefix="ppssld-quant-")
    try:
        prepared = os.path.join(work, "prepared.onnx")
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        import onnxruntime as ort

        input_name = ort.InferenceSession(prepared, providers=["CPUExecutionProvider"]).get_inputs()[0].name
        extra = {"TensorQuantOverrides": overrides_for(prepared)} if overrides_for is not None else {}
        try:
            quantize_static(prepared, out_path, _reader(batches, input_name),
                            quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANT_OPS), per_channel=True, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method={"minmax": CalibrationMethod.MinMax,
                                              "percentile": CalibrationMethod.Percentile,
                                              "entropy": CalibrationMethod.Entropy}[calibration],
                            extra_options=extra)
        except (ValueError, RuntimeError, KeyError, IndexError) as exc:
            raise QuantizationError(f"ONNX Runtime could not quantize {fp32_path}: "
                                    f"{type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    count = int8_node_count(out_path)
    if count == 0:
        raise QuantizationError(f"{fp32_path} has no {'/'.join(QUANT_OPS)} operation that ONNX Runtime quantized: "
                                f"nothing in it would run in int8")
    return count


@dataclass
class Int8Result:
    """What :func:`export_int8` wrote: the folder, its ``inference.yml`` and the sizes (bytes)."""
    model_dir: str
    infer_config: Dict[str, Any]
    fp32_bytes: int
    int8_bytes: int


def export_int8(config: Dict[str, Any], weights: Optional[str] = None, save_dir: Optional[str] = None,
                name: Optional[str] = None, calib_images: int = DEFAULT_CALIB_IMAGES, batch_size: int = 32,
                fmt: str = "qoperator", seed: Optional[int] = None, calibration: str = "minmax",
                reduce_range: bool = False) -> Int8Result:
    """Export ``config``'s student and write its int8 twin ``<save_dir>/<name>_int8_infer/``.

    Args:
        config: the full config (its ``DataLoader.Train.dataset`` gives the calibration images).
        weights: checkpoint (default ``Global.pretrained_model``).
        save_dir: output folder (default ``Global.save_inference_dir``, else ``./inference``).
        name: base name (default ``<Backbone>_ssld``; the folder is ``<name>_int8_infer``).
        calib_images: training images to calibrate on.
        batch_size: images per calibration batch.
        fmt: ``qoperator`` (QLinearConv ... nodes) or ``qdq`` (Quantize/DequantizeLinear pairs).
        seed: calibration sample seed (default ``Global.seed``, else 0).
        calibration: activation-range method (see :func:`quantize_onnx`).
        reduce_range: 7-bit weights (see :func:`quantize_onnx`).
    Returns:
        What was written.
    """
    from ppssld.export.inference import export_model

    reason = quantization_status()
    if reason:
        raise OnnxUnavailable(reason)
    save_dir = save_dir or get(config, "Global.save_inference_dir") or "./inference"
    seed = int(seed if seed is not None else get(config, "Global.seed", 0))
    paths = calibration_images(config, int(calib_images), seed)
    with tempfile.TemporaryDirectory(prefix="ppssld-fp32-") as fp32_dir:
        fp32 = export_model(config, weights=weights, save_dir=fp32_dir, name=name, with_hub=False, with_int8=False)
        fp32.onnx = export_onnx(fp32.model_dir, opset=QUANT_OPSET)
        infer_cfg = read_infer_config(os.path.join(fp32.model_dir, INFER_CONFIG))
        batches = calibration_batches(paths, infer_cfg, batch_size)
        info = {"activations": f"uint8 {calibration}", "calibration_images": len(paths),
                "calibration_list": str(get(config, f"{TRAIN_DATASET}.cls_label_path", "")),
                "calibration_seed": seed}
        final, nodes, infer_cfg = publish_int8(fp32.onnx, infer_cfg, fp32.name, save_dir, batches, fmt,
                                               calibration, info, reduce_range=reduce_range)
        fp32_bytes = os.path.getsize(fp32.onnx)
    int8_bytes = os.path.getsize(os.path.join(final, ONNX_FILE))
    logger.info("wrote %s (%d quantized nodes, %.2f MB -> %.2f MB, calibrated on %d images)", final, nodes,
                fp32_bytes / 1e6, int8_bytes / 1e6, len(paths))
    return Int8Result(final, infer_cfg, fp32_bytes, int8_bytes)


def publish_int8(fp32_onnx: str, infer_cfg: Dict[str, Any], name: str, save_dir: str, batches: List[np.ndarray],
                 fmt: str, calibration: str, info: Dict[str, Any],
                 overrides_for: Optional[Callable[[str], Dict[str, list]]] = None,
                 reduce_range: bool = False) -> Tuple[str, int, Dict[str, Any]]:
    """Quantize ``fp32_onnx`` (:func:`quantize_onnx`) into ``<save_dir>/<name>_int8_infer/`` with its
    ``inference.yml`` (the fp32 one's preprocessing; ``Global.quantization``: the tool, ``info``), atomically.

    Returns:
        ``(folder, quantized nodes, its inference.yml content)``.
    """
    import onnxruntime

    final = os.path.join(save_dir, f"{name}{INT8_SUFFIX}_infer")
    os.makedirs(save_dir, exist_ok=True)
    tmp = make_temp_dir(final)
    try:
        nodes = quantize_onnx(fp32_onnx, os.path.join(tmp, ONNX_FILE), batches, fmt, calibration, overrides_for,
                              reduce_range)
        glob = dict(infer_cfg["Global"])
        glob.update({"model_name": f"{name}{INT8_SUFFIX}", "model_format": "onnx", "precision": "int8",
                     "quantization": {"tool": f"onnxruntime {onnxruntime.__version__} quantize_static", "format": fmt,
                                      "weights": "int8 per channel" + (", 7-bit (reduce_range)" if reduce_range
                                                                       else ""), "ops": list(QUANT_OPS),
                                      "quantized_nodes": nodes, **info}})
        infer_cfg = {**infer_cfg, "Global": glob}
        write_infer_config(os.path.join(tmp, INFER_CONFIG), infer_cfg)
        publish_dir(tmp, final)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final, nodes, infer_cfg


def check_int8_folder(onnx_path: str, infer_cfg: Dict[str, Any], where: str) -> None:
    """A folder whose ``inference.yml`` says ``precision: int8`` must hold a quantized graph.

    Raises:
        QuantizationError: a float graph under an int8 ``inference.yml``.
    """
    if get(infer_cfg, "Global.precision") != "int8":
        return
    if int8_node_count(onnx_path) == 0:
        raise QuantizationError(f"{where} says Global.precision: int8 but {onnx_path} holds no quantized operation "
                                f"(a float model): write the int8 folder with deploy/slim/quant_post_static.py")
