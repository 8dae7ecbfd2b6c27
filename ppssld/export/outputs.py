"""What an exported graph returns: logits, or PaddleClas's ``Softmax`` / ``Sigmoid`` appended to them.

Export follows PaddleClas's ``ExportModel``: a multi-label model ends in a sigmoid, any other in a softmax
unless ``Arch.infer_add_softmax: False`` (then logits). ``inference.yml`` records the choice as
``Global.output`` (``logits``, ``softmax`` or ``sigmoid``), and every reader (predictor, PaddleHub module,
mining teacher) applies an activation only to a ``logits`` graph, so none is ever applied twice. Exports
written before ``Global.output`` had more than one value say ``logits`` and are read as such; an
``inference.yml`` without the key (PaddleClas's own, hand-written) is settled by the graph's last operation.
"""
import json
import logging
import os
from typing import Any, Dict, Optional

import numpy as np
import paddle.nn as nn

from ppssld.utils.config import get
from ppssld.export.infer_config import multilabel_threshold
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

LOGITS, SOFTMAX, SIGMOID = "logits", "softmax", "sigmoid"
GRAPH_OUTPUTS = (LOGITS, SOFTMAX, SIGMOID)
OUTPUT_KEY = "Global.output"


def export_activation(config: Dict[str, Any]) -> str:
    """The activation export appends, decided as PaddleClas's ``ExportModel`` decides it.

    A multi-label model (see :func:`ppssld.export.infer_config.multilabel_threshold`) gets ``sigmoid`` whatever
    ``Arch.infer_add_softmax`` says (PaddleClas too); any other ``softmax``, or ``logits`` with
    ``Arch.infer_add_softmax: False``. ``Arch.infer_output_key`` may be unset or ``logits`` (the class scores).

    Raises:
        ConfigError: ``infer_add_softmax`` that is not a boolean, or an ``infer_output_key`` naming another output.
    """
    add_softmax = get(config, "Arch.infer_add_softmax", True)
    if not isinstance(add_softmax, bool):
        raise ConfigError(f"Arch.infer_add_softmax must be true or false, got {add_softmax!r}"
                          + (" (a string: PaddleClas would take any non-empty string as true and add the softmax)"
                             if isinstance(add_softmax, str) else ""))
    key = get(config, "Arch.infer_output_key")
    if key not in (None, LOGITS):
        raise ConfigError(f"Arch.infer_output_key {key!r} is not supported: a ppssld export returns the classifier's "
                          f"class scores ('logits'); PaddleClas's 'features' exports a retrieval model's embedding "
                          f"(RecModel), which ppssld does not build. Remove the key or set it to logits")
    if multilabel_threshold(config) is not None:
        if not add_softmax:
            logger.warning("Arch.infer_add_softmax: False does not apply to a multi-label model: its graph ends in a "
                           "sigmoid, as PaddleClas's export does")
        return SIGMOID
    return SOFTMAX if add_softmax else LOGITS


class ScoredModel(nn.Layer):
    """``model`` followed by ``activation`` (``logits``: nothing), the graph export traces.

    Args:
        model: the classifier (logits out).
        activation: one of :data:`GRAPH_OUTPUTS`.
    """

    def __init__(self, model: nn.Layer, activation: str) -> None:
        super().__init__()
        if activation not in GRAPH_OUTPUTS:
            raise ConfigError(f"graph output must be one of {list(GRAPH_OUTPUTS)}, got {activation!r}")
        self.model = model
        self.activation = activation
        self.act = {SOFTMAX: nn.Softmax(axis=-1), SIGMOID: nn.Sigmoid()}.get(activation)

    def forward(self, x: Any) -> Any:
        """Logits, or their softmax / sigmoid."""
        out = self.model(x)
        return out if self.act is None else self.act(out)


def graph_activation(model_file: str) -> Optional[str]:
    """The activation a saved graph ends in, read from its last operation before ``fetch``.

    Reads Paddle 3.x ``inference.json`` (PIR) and Paddle 2.x ``inference.pdmodel`` (ProgramDesc).

    Returns:
        ``softmax``, ``sigmoid`` or ``logits`` (any other last operation); None when the file cannot be read.
    """
    try:
        if model_file.endswith(".json"):
            with open(model_file, "r", encoding="utf-8") as handle:
                ops = json.load(handle)["program"]["regions"][0]["blocks"][0]["ops"]
            names = [str(op.get("#", "")).split(".", 1)[-1] for op in ops]
        else:
            from paddle.base.proto import framework_pb2

            desc = framework_pb2.ProgramDesc()
            with open(model_file, "rb") as handle:
                desc.ParseFromString(handle.read())
            names = [op.type for op in desc.blocks[0].ops]
    except (OSError, ValueError, KeyError, IndexError, TypeError, ImportError) as exc:
        logger.warning("%s: cannot read the graph's last operation: %s", model_file, exc)
        return None
    names = [n for n in names if n not in ("fetch", "fetch_v2", "shadow_output")]
    if not names:
        return None
    return names[-1] if names[-1] in (SOFTMAX, SIGMOID) else LOGITS


def graph_output(infer_cfg: Dict[str, Any], model_file: Optional[str] = None, where: str = "inference.yml") -> str:
    """What the graph of an export returns: ``Global.output``, else (no key) its last operation.

    Args:
        infer_cfg: the ``inference.yml`` content.
        model_file: the graph, read when ``Global.output`` is absent.
        where: the file named in messages.
    Raises:
        ConfigError: an unknown ``Global.output``, or none and a graph that cannot be read.
    """
    value = get(infer_cfg, OUTPUT_KEY)
    if value is not None:
        if value not in GRAPH_OUTPUTS:
            raise ConfigError(f"{where}: {OUTPUT_KEY} must be one of {list(GRAPH_OUTPUTS)} (what the graph returns), "
                              f"got {value!r}")
        return str(value)
    found = graph_activation(model_file) if model_file else None
    if found is None:
        raise ConfigError(f"{where} has no {OUTPUT_KEY} and the graph's last operation could not be read: add "
                          f"{OUTPUT_KEY}: logits, softmax or sigmoid (what the graph returns)")
    logger.info("%s has no %s; the graph %s ends in %s", where, OUTPUT_KEY, os.path.basename(str(model_file)), found)
    return found


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (returned as float32)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (returned as float32), stable for large |logits|."""
    x = logits.astype(np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def class_scores(outputs: np.ndarray, output: str, multilabel: bool) -> np.ndarray:
    """Class scores of a batch of graph outputs: a ``logits`` graph's outputs get the softmax (or, multi-label,
    the sigmoid) here; a graph that ends in an activation already returns scores, taken as they are (as
    PaddleClas's deploy post-processing takes them)."""
    if output != LOGITS:
        return np.asarray(outputs, dtype=np.float32)
    return sigmoid(outputs) if multilabel else softmax(outputs)
