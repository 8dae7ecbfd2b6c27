"""Paddle Inference predictor for an exported folder, shared by the deploy CLI and the hub module.

Preprocessing comes from the folder's ``inference.yml`` through :mod:`ppssld.data.transforms`.
The graph returns what ``inference.yml``'s ``Global.output`` says (:mod:`ppssld.export.outputs`): PaddleClas's
softmax / sigmoid scores, taken as they are, or logits, whose softmax (or, multi-label, sigmoid) is taken here.
Post-processing is a top-k, or for a multi-label model (``PostProcess.MultiLabelThreshOutput``) every label
whose score reaches the threshold.
"""
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ppssld.data.image import read_bytes, transform_image
from ppssld.data.transforms import ImageDecodeError
from ppssld.export.infer_config import (INFER_CONFIG, default_topk, infer_threshold, label_list, preprocessor,
                                        read_infer_config)
from ppssld.export.outputs import class_scores, graph_output, sigmoid, softmax  # noqa: F401  (softmax, sigmoid: API)
from ppssld.utils.errors import DataError, PpssldError
from ppssld.utils.topk import top_k

logger = logging.getLogger(__name__)

PIR_MODEL, LEGACY_MODEL, PARAMS = "inference.json", "inference.pdmodel", "inference.pdiparams"
ONNX_MODEL = "inference.onnx"  # alone (no Paddle graph): an ONNX folder such as <name>_int8_infer/
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif")
PRECISIONS = ("fp32", "fp16")


class ModelDirError(PpssldError, ValueError):
    """An exported model folder that is missing or incomplete."""


@dataclass
class ModelFiles:
    """The files of an exported folder.

    Attributes:
        model: ``inference.json`` (Paddle 3.x) or ``inference.pdmodel`` (Paddle 2.x); in a folder without
            either, ``inference.onnx`` (run with ONNX Runtime).
        params: ``inference.pdiparams``; None for an ONNX folder.
        config: ``inference.yml``.
    """
    model: str
    params: Optional[str]
    config: str


def resolve_model_files(model_dir: str) -> ModelFiles:
    """Find the model, weights and ``inference.yml`` of an exported folder.

    Raises:
        ModelDirError: the folder or one of the files is missing, naming what is there.
    """
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model folder {model_dir!r} does not exist; export one with "
                            f"tools/export_model.py -c <config> -o Global.pretrained_model=<checkpoint>")
    present = sorted(os.listdir(model_dir))
    model = next((os.path.join(model_dir, f) for f in (PIR_MODEL, LEGACY_MODEL) if f in present), None)
    if model is None and ONNX_MODEL in present and INFER_CONFIG in present:
        return ModelFiles(os.path.join(model_dir, ONNX_MODEL), None, os.path.join(model_dir, INFER_CONFIG))
    missing = [] if model else [f"{PIR_MODEL} (or {LEGACY_MODEL}, or {ONNX_MODEL} alone)"]
    missing += [f for f in (PARAMS, INFER_CONFIG) if f not in present]
    if missing:
        raise ModelDirError(f"model folder {model_dir!r} is incomplete: missing {', '.join(missing)} "
                            f"(it holds {present or 'nothing'}); re-run tools/export_model.py")
    return ModelFiles(model, os.path.join(model_dir, PARAMS), os.path.join(model_dir, INFER_CONFIG))


def label_name(class_id: int, names: Optional[Sequence[str]]) -> str:
    """The class name of ``class_id`` when ``names`` has a non-empty one, else the id as text."""
    if names and 0 <= class_id < len(names) and str(names[class_id]):
        return str(names[class_id])
    return str(class_id)


def topk_results(probs: np.ndarray, k: int, names: Optional[Sequence[str]]) -> List[Dict[str, Any]]:
    """Per row of class scores: ``{"class_ids", "scores", "label_names"}`` of the k highest (PaddleClas's ``Topk``).

    Ties keep the lower class id first. ``label_names`` holds the class name when known, else the
    class id as text (as the PaddleHub module keys its results).
    """
    k = max(1, min(int(k), probs.shape[-1]))
    results = []
    for row, order in zip(probs, top_k(probs, k)[1]):
        results.append({"class_ids": [int(i) for i in order],
                        "scores": [float(row[i]) for i in order],
                        "label_names": [label_name(i, names) for i in order]})
    return results


def threshold_results(probs: np.ndarray, threshold: float, names: Optional[Sequence[str]]) -> List[Dict[str, Any]]:
    """Per row of scores, PaddleClas's ``MultiLabelThreshOutput``: ``{"class_ids", "scores", "label_names"}`` of
    every label whose score is at least ``threshold``, in class-id order."""
    results = []
    for row in probs:
        ids = np.nonzero(row >= threshold)[0]
        results.append({"class_ids": [int(i) for i in ids], "scores": [float(row[i]) for i in ids],
                        "label_names": [str(names[i]) if names else "" for i in ids]})
    return results


def parse_shape_range(text: str) -> Tuple[List[int], List[int], List[int]]:
    """``"1,3,224,224:8,3,224,224:32,3,224,224"`` -> (min, opt, max) shapes for TensorRT."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"TensorRT shape range must be 'min:opt:max' with comma-separated dims, got {text!r}")
    try:
        shapes = [[int(v) for v in part.split(",")] for part in parts]
    except ValueError as exc:
        raise ValueError(f"TensorRT shape range {text!r}: dims must be integers") from exc
    if len({len(s) for s in shapes}) != 1:
        raise ValueError(f"TensorRT shape range {text!r}: min, opt and max need the same rank")
    return shapes[0], shapes[1], shapes[2]


class Predictor:
    """Classify images with an exported Paddle Inference model.

    Args:
        model_dir: the ``..._infer`` folder.
        device: ``"cpu"`` or ``"gpu"``.
        enable_mkldnn: oneDNN kernels on CPU.
        cpu_threads: math-library threads on CPU.
        batch_size: largest batch :meth:`run` receives (TensorRT max batch).
        use_tensorrt: TensorRT subgraphs on GPU.
        precision: ``"fp32"`` or ``"fp16"`` (TensorRT).
        trt_shape_range: ``"min:opt:max"`` dims (see :func:`parse_shape_range`); default batch 1 to
            ``batch_size`` at the exported image size.
        gpu_id: GPU index.
        gpu_mem_mb: initial GPU memory pool.
        ir_optim: graph optimisations.

    Attributes:
        output: what the graph returns (``logits``, ``softmax``, ``sigmoid``), from ``inference.yml``'s
            ``Global.output`` or, without it, the graph's last operation.
    """

    def __init__(self, model_dir: str, device: str = "cpu", enable_mkldnn: bool = False, cpu_threads: int = 1,
                 batch_size: int = 1, use_tensorrt: bool = False, precision: str = "fp32",
                 trt_shape_range: Optional[str] = None, gpu_id: int = 0, gpu_mem_mb: int = 500,
                 ir_optim: bool = True) -> None:
        self.files = resolve_model_files(model_dir)
        self.model_dir = model_dir
        self.infer_cfg = read_infer_config(self.files.config)
        self.transform = preprocessor(self.infer_cfg)
        self.names = label_list(self.infer_cfg)
        self.topk = default_topk(self.infer_cfg)
        self.threshold = infer_threshold(self.infer_cfg)
        self.output = graph_output(self.infer_cfg, self.files.model, self.files.config)
        self.image_shape = [int(v) for v in self.infer_cfg["Global"]["image_shape"]]
        self.batch_size = max(1, int(batch_size))
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if self.files.params is None:
            self._run = self._onnx_runner(device, use_tensorrt, cpu_threads)
            return
        config = self._config(device, enable_mkldnn, cpu_threads, use_tensorrt, precision, trt_shape_range,
                              gpu_id, gpu_mem_mb, ir_optim)
        from paddle import inference

        self._predictor = inference.create_predictor(config)
        self.input_name = self._predictor.get_input_names()[0]
        self._input = self._predictor.get_input_handle(self.input_name)
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])
        self._run = self._paddle_run

    def _onnx_runner(self, device: str, use_tensorrt: bool, cpu_threads: int) -> Any:
        """ONNX Runtime on the CPU for a folder holding ``inference.onnx`` alone (an int8 folder)."""
        if device != "cpu" or use_tensorrt:
            raise ValueError(f"{self.model_dir} holds an ONNX model, which runs on the CPU with ONNX Runtime: "
                             f"use --device cpu without TensorRT")
        from ppssld.export.onnx import OnnxPredictor
        from ppssld.export.quantize import check_int8_folder

        check_int8_folder(self.files.model, self.infer_cfg, self.files.config)
        session = OnnxPredictor(self.files.model, threads=cpu_threads)
        self.input_name = session.input_name
        return session.run

    def _config(self, device: str, enable_mkldnn: bool, cpu_threads: int, use_tensorrt: bool, precision: str,
                trt_shape_range: Optional[str], gpu_id: int, gpu_mem_mb: int, ir_optim: bool) -> Any:
        import paddle
        from paddle import inference

        config = inference.Config(self.files.model, self.files.params)
        config.disable_glog_info()
        config.switch_ir_optim(bool(ir_optim))
        if device == "gpu":
            if not paddle.is_compiled_with_cuda():
                raise ValueError("device 'gpu' asked for, but this paddle build has no CUDA; "
                                 "install paddlepaddle-gpu or use --device cpu")
            config.enable_use_gpu(int(gpu_mem_mb), int(gpu_id))
            if use_tensorrt:
                self._tensorrt(config, precision, trt_shape_range)
        elif device == "cpu":
            if use_tensorrt:
                raise ValueError("TensorRT needs --device gpu")
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(max(1, int(cpu_threads)))
            if enable_mkldnn:
                config.enable_mkldnn()
                config.set_mkldnn_cache_capacity(10)
            elif hasattr(config, "disable_mkldnn"):
                config.disable_mkldnn()
        else:
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        return config

    def _tensorrt(self, config: Any, precision: str, trt_shape_range: Optional[str]) -> None:
        from paddle.inference import PrecisionType

        mode = PrecisionType.Half if precision == "fp16" else PrecisionType.Float32
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=self.batch_size,
                                      min_subgraph_size=3, precision_mode=mode, use_static=False,
                                      use_calib_mode=False)
        if trt_shape_range:
            low, opt, high = parse_shape_range(trt_shape_range)
        else:
            low, opt, high = ([1] + self.image_shape, [self.batch_size] + self.image_shape,
                              [self.batch_size] + self.image_shape)
        config.set_trt_dynamic_shape_info({"x": low}, {"x": high}, {"x": opt})

    def preprocess(self, item: Any) -> np.ndarray:
        """One image (encoded bytes, or an HWC uint8 RGB array) -> CHW float32, as the dataset makes it."""
        return transform_image(item, self.transform)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The graph's outputs (:attr:`output`: logits, softmax or sigmoid) of an ``[N, C, H, W]`` float32 batch."""
        return self._run(np.ascontiguousarray(batch, dtype=np.float32))

    def _paddle_run(self, batch: np.ndarray) -> np.ndarray:
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(batch)
        self._predictor.run()
        return self._output.copy_to_cpu()

    def outputs(self, items: Sequence[Any]) -> np.ndarray:
        """Preprocess ``items`` and run them in batches of ``batch_size``: the graph's outputs (see :meth:`run`)."""
        arrays = [self.preprocess(item) for item in items]
        outs = [self.run(np.stack(arrays[i:i + self.batch_size])) for i in range(0, len(arrays), self.batch_size)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, 0), np.float32)

    def scores(self, outputs: np.ndarray) -> np.ndarray:
        """Class scores of a batch of graph outputs (an activation only for a ``logits`` graph)."""
        return class_scores(outputs, self.output, self.threshold is not None)

    def results(self, outputs: np.ndarray, top_k: Optional[int] = None) -> List[Dict[str, Any]]:
        """The exported post-processing of a batch of graph outputs: :func:`threshold_results` for a multi-label
        model (``top_k`` does not apply), else :func:`topk_results`."""
        if self.threshold is not None:
            return threshold_results(self.scores(outputs), self.threshold, self.names)
        return topk_results(self.scores(outputs), top_k or self.topk, self.names)

    def classify(self, items: Sequence[Any], top_k: Optional[int] = None) -> List[Dict[str, Any]]:
        """Post-processed predictions of each item (see :meth:`results`)."""
        return self.results(self.outputs(items), top_k)


def list_images(path: str, image_root: Optional[str] = None) -> List[str]:
    """Images named by ``path``: one image, a folder (recursively, sorted) or a list file.

    A list file (``.txt``/``.list``) holds one path per line, optionally followed by a label
    (PaddleClas label lists); relative paths are taken from ``image_root`` (default: the list's folder).

    Raises:
        DataError: ``path`` does not exist or names no image.
    """
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DataError(f"folder {path!r} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        return found
    if not os.path.isfile(path):
        raise DataError(f"{path!r} does not exist (give an image, a folder or a list file)")
    if path.lower().endswith((".txt", ".list")):
        from ppssld.data.lists.label_list import parse_line

        base = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
        with open(path, "r", encoding="utf-8-sig") as handle:
            rows = [parse_line(line, unlabeled=True, ignore_labels=True)[0] for line in handle if line.strip()]
        if not rows:
            raise DataError(f"list file {path!r} is empty")
        return [row if os.path.isabs(row) else os.path.join(base, row) for row in rows]
    return [path]


def predict_paths(predictor: Predictor, paths: Sequence[str], top_k: Optional[int] = None) -> List[Dict[str, Any]]:
    """Classify image files; a file that cannot be read or decoded gets an ``error`` entry.

    Returns:
        One dict per path, in order: ``{"path", "class_ids", "scores", "label_names"}``, plus
        ``"error"`` (and empty lists) for a failed file.
    """
    results: List[Dict[str, Any]] = []
    for start in range(0, len(paths), predictor.batch_size):
        chunk = paths[start:start + predictor.batch_size]
        arrays, good = [], []
        slots: List[Dict[str, Any]] = []
        for path in chunk:
            slot: Dict[str, Any] = {"path": path}
            try:
                arrays.append(predictor.preprocess(read_bytes(path)))
                good.append(slot)
            except (OSError, ImageDecodeError, DataError) as exc:
                logger.error("%s: cannot be classified: %s", path, exc)
                slot.update({"class_ids": [], "scores": [], "label_names": [], "error": str(exc)})
            slots.append(slot)
        if arrays:
            tops = predictor.results(predictor.run(np.stack(arrays)), top_k)
            for slot, top in zip(good, tops, strict=True):
                slot.update(top)
        results += slots
    return results


def benchmark(run: Any, arrays: Sequence[np.ndarray], batch_size: int, warmup: int = 3,
              repeats: int = 10) -> Dict[str, float]:
    """Time ``run(batch)`` over preprocessed arrays, after ``warmup`` untimed passes.

    Args:
        run: e.g. :meth:`Predictor.run`.
        arrays: CHW float32 images.
        batch_size: images per call.
        warmup: untimed passes over all batches.
        repeats: timed passes over all batches.
    Returns:
        ``latency_ms_p50``, ``latency_ms_p95`` (per batch), ``throughput_ips`` (images/s),
        ``batches`` timed, ``batch_size``.
    """
    import time

    batches = [np.stack(arrays[i:i + batch_size]) for i in range(0, len(arrays), batch_size)]
    if not batches:
        raise DataError("benchmark needs at least one image")
    for _ in range(max(0, warmup)):
        for batch in batches:
            run(batch)
    times, images = [], 0
    for _ in range(max(1, repeats)):
        for batch in batches:
            start = time.perf_counter()
            run(batch)
            times.append(time.perf_counter() - start)
            images += len(batch)
    lat = np.array(times) * 1000.0
    return {"latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p95": float(np.percentile(lat, 95)),
            "throughput_ips": float(images / sum(times)), "batches": len(times), "batch_size": int(batch_size)}
