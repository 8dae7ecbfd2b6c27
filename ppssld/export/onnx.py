"""Optional ONNX export through paddle2onnx, and an onnxruntime predictor for parity checks.

paddle2onnx is always called with ``optimize_tool="onnxoptimizer"``: its default
(``"polygraphy"``) sets ``POLYGRAPHY_AUTOINSTALL_DEPS=1`` and pip-installs packages at run time,
which can replace the pinned numpy.

The ONNX graph is the exported graph converted, its ending included: PaddleClas's softmax / sigmoid, or logits
with ``Arch.infer_add_softmax: False``, as ``inference.yml``'s ``Global.output`` beside it says
(:attr:`OnnxPredictor.output`).
"""
import logging
import os
from typing import Any, Optional, Tuple

import numpy as np

from ppssld.export.infer_config import INFER_CONFIG, read_infer_config
from ppssld.export.outputs import graph_output
from ppssld.export.runtime import LEGACY_MODEL, PIR_MODEL, resolve_model_files
from ppssld.utils.errors import PpssldError
from ppssld.utils.io import atomic_path

logger = logging.getLogger(__name__)

ONNX_FILE = "inference.onnx"
DEFAULT_OPSET = 11


class OnnxUnavailable(PpssldError, RuntimeError):
    """paddle2onnx / onnxruntime is missing or cannot read this model format."""


def paddle2onnx_status(model_file: str = PIR_MODEL) -> Tuple[bool, str]:
    """Whether the installed paddle2onnx can convert a model in ``model_file``'s format.

    Returns:
        ``(ok, reason)``; ``reason`` explains a ``False``.
    """
    try:
        import paddle2onnx
    except ImportError as exc:
        return False, f"paddle2onnx is not installed (pip install paddle2onnx): {exc}"
    version = str(getattr(paddle2onnx, "__version__", "0"))
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if model_file.endswith(".json") and major < 2:
        return False, (f"paddle2onnx {version} reads only the Paddle 2.x .pdmodel format; the exported "
                       f"{PIR_MODEL} (Paddle 3.x) needs paddle2onnx >= 2.0")
    return True, f"paddle2onnx {version}"


def export_onnx(model_dir: str, out_path: Optional[str] = None, opset: int = DEFAULT_OPSET) -> str:
    """Convert an exported folder to ONNX (input ``x`` with a dynamic batch).

    Args:
        model_dir: the ``..._infer`` folder.
        out_path: ONNX file (default ``<model_dir>/inference.onnx``).
        opset: ONNX opset.
    Returns:
        The ONNX file.
    Raises:
        OnnxUnavailable: paddle2onnx missing or unable to read the format.
    """
    files = resolve_model_files(model_dir)
    if files.params is None:
        raise OnnxUnavailable(f"{model_dir} holds an ONNX model already ({files.model}); convert its fp32 export")
    ok, reason = paddle2onnx_status(files.model)
    if not ok:
        raise OnnxUnavailable(reason)
    import paddle2onnx

    out_path = out_path or os.path.join(model_dir, ONNX_FILE)
    with atomic_path(out_path) as tmp:
        paddle2onnx.export(files.model, files.params, save_file=tmp, opset_version=int(opset),
                           enable_onnx_checker=True, optimize_tool="onnxoptimizer", verbose=False)
    logger.info("wrote %s (%s, opset %d)", out_path, reason, opset)
    return out_path


class OnnxPredictor:
    """Run an ONNX classifier with onnxruntime on CPU.

    Args:
        onnx_path: the ``.onnx`` file.
        threads: intra-op threads.

    Attributes:
        output: what the graph returns (``logits``, ``softmax``, ``sigmoid``) as the ``inference.yml`` beside the
            file says; None without one.
    """

    def __init__(self, onnx_path: str, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise OnnxUnavailable(f"onnxruntime is not installed (pip install onnxruntime): {exc}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        folder = os.path.dirname(os.path.abspath(onnx_path))
        yml = os.path.join(folder, INFER_CONFIG)
        self.output: Optional[str] = None
        if os.path.isfile(yml):
            graph = next((os.path.join(folder, f) for f in (PIR_MODEL, LEGACY_MODEL)
                          if os.path.isfile(os.path.join(folder, f))), None)
            self.output = graph_output(read_infer_config(yml), graph, yml)

    def run(self, batch: np.ndarray) -> Any:
        """The graph's outputs (see :attr:`output`) of an ``[N, C, H, W]`` float32 batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
