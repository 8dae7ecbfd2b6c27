"""Run a frozen teacher layer in an inference engine instead of dygraph: Paddle Inference (oneDNN on CPU)
or ONNX Runtime (the saved net converted by paddle2onnx; the ``onnx`` extra).

The layer is saved once with ``paddle.jit.save`` into a folder of the engine store keyed by its
weights (their bytes, :func:`ppssld.utils.fingerprint.arrays_digest`), its class and the input shape
``[C, H, W]`` and Paddle's version; any change makes another folder, and a run finding the folder
reuses it (the ONNX conversion, ``teacher.onnx``, lives in the same folder). The store is ``<ppssld cache>/teacher_engine`` (:func:`ppssld.utils.io.cache_root`). Each folder is written beside its final name and renamed into place, so two
processes (ranks) saving the same teacher at once both end with a complete folder. The half-written copies
(``.<key>.<host>-<pid>.*`` beside the folder, ``teacher.onnx.<host>-<pid>.tmp`` inside it) that a killed save or
conversion left are removed by the next run that uses the folder, once that pid no longer runs on this host.
"""
import importlib.util
import logging
import os
import shutil
import socket
import time
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from ppssld.export.onnx import OnnxPredictor
from ppssld.utils.errors import ConfigError
from ppssld.utils.fingerprint import arrays_digest, digest
from ppssld.utils.folder_lock import process_alive
from ppssld.utils.io import cache_root, ensure_dir, make_temp_dir

logger = logging.getLogger(__name__)

ENGINES = ("auto", "dygraph", "paddle_inference", "onnxruntime")
KINDS = ("paddle_inference", "onnxruntime")  # the engines LayerEngine runs
ONNX_FILE = "teacher.onnx"
MODEL_FILE = "teacher"  # paddle.jit.save prefix inside a store folder
EXACT_TOLERANCE = 1e-4  # largest |softmax difference| to dygraph that an engine may have on a checked batch


def store_root() -> str:
    """The engine store folder (see the module docstring)."""
    return os.path.join(cache_root(), "teacher_engine")


def check_engine_name(value: object, where: str = "Arch.teacher_engine") -> str:
    """The engine name, or a ConfigError naming the key and the valid values."""
    if value is None:
        return "auto"
    if value not in ENGINES:
        raise ConfigError(f"{where} must be one of {', '.join(ENGINES)}, got {value!r}")
    return str(value)


def layer_key(layer: nn.Layer, shape: Sequence[int]) -> str:
    """The store key of ``layer`` run at input ``shape`` ``[C, H, W]``."""
    weights = arrays_digest({k: v.numpy() for k, v in layer.state_dict().items()})
    return digest({"weights": weights, "class": type(layer).__name__, "shape": list(shape),
                   "paddle": paddle.__version__})


def writer_tag() -> str:
    """``<host>-<pid>``: names this process's temporaries in the store, so that a later run can tell a dead
    writer's (:func:`remove_dead_temporaries`) from a running one's."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _dead(tag: str) -> bool:
    host, _, pid = tag.rpartition("-")
    return host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))


def remove_dead_temporaries(folder: str) -> int:
    """Delete what saves and conversions killed on this host left of store folder ``folder`` (see the module
    docstring); a running writer's temporaries, another host's and unnamed ones stay.

    Returns:
        How many were removed.
    """
    parent, key = os.path.split(os.path.abspath(folder))
    found = []
    for name in os.listdir(parent) if os.path.isdir(parent) else []:
        if name.startswith(f".{key}.") and "." in name[len(key) + 2:]:
            found.append((os.path.join(parent, name), name[len(key) + 2:].rsplit(".", 1)[0]))
    onnx_prefix = ONNX_FILE + "."
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith(onnx_prefix) and name.endswith(".tmp"):
            found.append((os.path.join(folder, name), name[len(onnx_prefix):-len(".tmp")]))
    removed = 0
    for path, tag in found:
        if _dead(tag):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
            removed += 1
    if removed:
        logger.info("teacher engine store: removed %d temporary copy(ies) of %s left by killed runs", removed, key)
    return removed


def _save(layer: nn.Layer, shape: Sequence[int], folder: str) -> None:
    """``paddle.jit.save`` the layer into ``folder`` (complete or absent)."""
    remove_dead_temporaries(folder)
    if os.path.isfile(os.path.join(folder, MODEL_FILE + ".pdiparams")):
        return
    tmp = make_temp_dir(folder, tag=writer_tag())
    try:
        spec = [paddle.static.InputSpec([None, *shape], "float32", "x")]
        was_training = layer.training
        layer.eval()
        paddle.jit.save(paddle.jit.to_static(layer, input_spec=spec, full_graph=True),
                        os.path.join(tmp, MODEL_FILE))
        if was_training:
            layer.train()
        try:
            os.rename(tmp, folder)
        except OSError:  # another process published the same folder first: keep theirs
            if not os.path.isfile(os.path.join(folder, MODEL_FILE + ".pdiparams")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _model_files(folder: str) -> Tuple[str, str]:
    for graph in ("teacher.json", "teacher.pdmodel"):
        if os.path.isfile(os.path.join(folder, graph)):
            return os.path.join(folder, graph), os.path.join(folder, MODEL_FILE + ".pdiparams")
    raise ConfigError(f"teacher engine folder {folder} holds no saved model: delete it and run again")


class InferencePredictor:
    """A Paddle Inference predictor (CPU, oneDNN) of one saved teacher at one input shape."""

    def __init__(self, folder: str, threads: int) -> None:
        import paddle.inference as pi

        graph, params = _model_files(folder)
        config = pi.Config(graph, params)
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(max(1, int(threads)))
        config.disable_glog_info()
        self.predictor = pi.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.input.reshape(list(batch.shape))
        self.input.copy_from_cpu(batch)
        self.predictor.run()
        return self.output.copy_to_cpu()


class OnnxRuntimePredictor:
    """ONNX Runtime (CPU) running the saved teacher converted once by paddle2onnx into ``teacher.onnx``.

    Raises:
        ConfigError: paddle2onnx or onnxruntime missing (the ``onnx`` extra), or the conversion failing.
    """

    def __init__(self, folder: str, threads: int) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError("Arch.teacher_engine: onnxruntime needs paddle2onnx and onnxruntime (onnxruntime is "
                              "missing); install them with: bash scripts/install.sh onnx (or choose paddle_inference)")
        try:
            import paddle2onnx
        except ImportError as exc:
            raise ConfigError(f"Arch.teacher_engine: onnxruntime needs paddle2onnx and onnxruntime ({exc}); install "
                              f"them with: bash scripts/install.sh onnx (or choose paddle_inference)") from exc
        onnx_path = os.path.join(folder, ONNX_FILE)
        if not os.path.isfile(onnx_path):
            graph, params = _model_files(folder)
            tmp = f"{onnx_path}.{writer_tag()}.tmp"
            try:
                paddle2onnx.export(graph, params, save_file=tmp, opset_version=11, enable_onnx_checker=True,
                                   optimize_tool="onnxoptimizer", verbose=False)
                os.replace(tmp, onnx_path)
            except (RuntimeError, ValueError, OSError) as exc:
                raise ConfigError(f"Arch.teacher_engine: onnxruntime: paddle2onnx could not convert the saved "
                                  f"teacher in {folder}: {exc}; choose paddle_inference or dygraph") from exc
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        self.session = OnnxPredictor(onnx_path, threads)  # the one ONNX Runtime session set-up (export's)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(batch)


PREDICTORS = {"paddle_inference": InferencePredictor, "onnxruntime": OnnxRuntimePredictor}
ENGINE_LABELS = {"paddle_inference": "Paddle Inference (oneDNN", "onnxruntime": "ONNX Runtime (CPU"}


def softmax_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between the row softmaxes of two logit arrays."""
    def soft(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return float(np.abs(soft(a.astype(np.float64)) - soft(b.astype(np.float64))).max())


class LayerEngine:
    """Runs ``layer`` in an inference engine, one predictor per input shape, each checked against dygraph on its
    first batch (softmax within :data:`EXACT_TOLERANCE`).

    Args:
        layer: the frozen teacher (eval mode, logits out).
        name: its name, for logs and errors.
        threads: CPU threads of each predictor.
        kind: ``paddle_inference`` or ``onnxruntime``.
    Raises (on a call):
        ConfigError: the engine's softmax differs from dygraph's beyond the tolerance.
    """

    def __init__(self, layer: nn.Layer, name: str, threads: int, kind: str = "paddle_inference") -> None:
        if kind not in KINDS:
            raise ConfigError(f"teacher engine kind must be one of {KINDS}, got {kind!r}")
        self.layer, self.name, self.threads, self.kind = layer, name, int(threads), kind
        self.predictors: Dict[Tuple[int, ...], Any] = {}

    def __deepcopy__(self, memo: dict) -> "LayerEngine":
        return self  # frozen: a model copy (EMA) shares the engine

    def _predictor(self, batch: np.ndarray) -> Any:
        shape = tuple(int(s) for s in batch.shape[1:])
        if shape in self.predictors:
            return self.predictors[shape]
        start = time.perf_counter()
        folder = os.path.join(ensure_dir(store_root()), layer_key(self.layer, shape))
        reused = os.path.isfile(os.path.join(folder, MODEL_FILE + ".pdiparams"))
        _save(self.layer, shape, folder)
        predictor = PREDICTORS[self.kind](folder, self.threads)
        with paddle.no_grad():
            reference = self.layer(paddle.to_tensor(batch)).numpy()
        gap = softmax_gap(predictor(batch), reference)
        if gap > EXACT_TOLERANCE:
            raise ConfigError(f"Arch.teacher_engine: {self.kind}'s softmax of {self.name} differs from dygraph's "
                              f"by {gap:.2e} (> {EXACT_TOLERANCE:g}) at input {list(shape)}; set "
                              f"Arch.teacher_engine: dygraph")
        logger.info("teacher %s runs in %s, %d thread(s)) at input %s: %s %s in %.1f s; "
                    "softmax within %.1e of dygraph on its first batch", self.name, ENGINE_LABELS[self.kind],
                    self.threads, list(shape),
                    "reused" if reused else "saved", folder, time.perf_counter() - start, gap)
        self.predictors[shape] = predictor
        return predictor

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(n, classes)`` float32 of a float32 batch ``(n, C, H, W)``."""
        return self._predictor(batch)(batch)
