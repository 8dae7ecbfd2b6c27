"""Which engine runs a frozen teacher (``Arch.teacher_engine``), and the layer that runs it online.

``auto`` (the default) takes Paddle Inference with oneDNN on CPU, the fastest engine measured exact here
(``benchmark/teacher_engine.py``), and dygraph where it cannot serve: a teacher in ``teacher_bn_mode:
train`` (batch statistics), a teacher returning intermediate features (``return_patterns``), a GPU run
(Paddle Inference on a GPU is not measured on this project's machines). ``paddle_inference`` asks for
the engine and is refused with the reason where it cannot serve; ``onnxruntime`` runs the saved net in
ONNX Runtime (paddle2onnx + onnxruntime, the ``onnx`` extra) under the same rules; ``dygraph`` keeps
today's forward. A frozen member may set its own ``teacher_engine`` (``Arch.models[N].<Name>.teacher_engine``,
e.g. one member of an ensemble in dygraph), which overrides ``Arch.teacher_engine`` for it. A teacher with its own
input (:mod:`ppssld.teacher.inputs`) is prepared before the engine, so the engine is saved and checked at the
teacher's input shape.
"""
import logging
import os
from typing import Any, Dict, Optional, Tuple

import paddle
import paddle.nn as nn

from ppssld.arch.roles import model_entries
from ppssld.teacher.engines import LayerEngine, check_engine_name
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)


def dygraph_reason(entry: Dict[str, Any], bn_mode: str) -> Optional[str]:
    """Why a teacher built from ``entry`` must run in dygraph, or None."""
    if bn_mode == "train":
        return "Arch.teacher_bn_mode: train needs the batch's statistics"
    if entry.get("return_patterns") or entry.get("name") == "AttentionModel":
        return "it returns intermediate features (return_patterns)"
    if "gpu" in str(paddle.device.get_device()):
        return "Paddle Inference on a GPU is not measured on this project's machines"
    return None


def engine_label(engine: Optional[LayerEngine]) -> str:
    """The engine's name as cache manifests and mining reports record it (``dygraph`` for None)."""
    return engine.kind if engine is not None else "dygraph"


def engine_choice(arch: Dict[str, Any], name: str) -> Tuple[Any, str]:
    """``(choice, its config place)`` for frozen model ``name``: its own ``teacher_engine``, else the Arch's."""
    for i, (key, entry) in enumerate(model_entries(arch)):
        if key == name and entry.get("teacher_engine") is not None:
            return entry["teacher_engine"], f"Arch.models[{i}].{name}.teacher_engine"
    return arch.get("teacher_engine"), "Arch.teacher_engine"


def engine_for(layer: nn.Layer, name: str, entry: Dict[str, Any], choice: Any,
               bn_mode: str = "eval", where: str = "Arch.teacher_engine") -> Optional[LayerEngine]:
    """The engine that runs frozen teacher ``name`` (None: dygraph), with one log line saying which and why.

    Raises:
        ConfigError: a bad ``Arch.teacher_engine`` (``where``), or ``paddle_inference`` where it cannot serve.
    """
    choice = check_engine_name(choice, where)
    if choice == "dygraph":
        logger.info("teacher %s runs in dygraph (%s: dygraph)", name, where)
        return None
    reason = dygraph_reason(entry, bn_mode)
    if reason is not None:
        if choice != "auto":
            raise ConfigError(f"{where}: {choice} cannot run teacher {name}: {reason}; "
                              f"use auto or dygraph")
        logger.info("teacher %s runs in dygraph (%s: auto): %s", name, where, reason)
        return None
    kind = "paddle_inference" if choice == "auto" else choice
    return LayerEngine(layer, name, threads=int(os.environ.get("OMP_NUM_THREADS", "1") or 1), kind=kind)


class EngineTeacher(nn.Layer):
    """Stands where the frozen teacher stood: the same sublayers and parameters (so ``Teacher.*`` checkpoint
    keys are unchanged), a forward through the engine. Output: float32 logits without gradient."""

    def __init__(self, layer: nn.Layer, engine: LayerEngine) -> None:
        super().__init__()
        for child_name, child in layer.named_children():
            self.add_sublayer(child_name, child)
        for param_name, param in layer.named_parameters(include_sublayers=False):
            self.add_parameter(param_name, param)
        self.engine = engine

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.to_tensor(self.engine(x.numpy()))


def attach_teacher_engines(model: nn.Layer, config: Dict[str, Any]) -> None:
    """Put each frozen teacher of a DistillationModel behind its engine (``Arch.teacher_engine``); the engine
    is built at the teacher's first forward, once every weight has been loaded."""
    arch = config.get("Arch") or {}
    if arch.get("name") != "DistillationModel" or not getattr(model, "frozen", None):
        return
    entries = dict(model_entries(arch))
    bn_mode = arch.get("teacher_bn_mode", "eval")
    for name in model.frozen:
        layer = getattr(model, name)
        if getattr(layer, "is_soft_label_cache", False) or isinstance(layer, EngineTeacher):
            continue
        choice, where = engine_choice(arch, name)
        engine = engine_for(layer, name, entries.get(name) or {}, choice, bn_mode, where)
        if engine is not None:
            wrapped = EngineTeacher(layer, engine)
            wrapped.eval()
            setattr(model, name, wrapped)
