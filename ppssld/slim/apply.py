"""Put fake-quant layers into a model where ONNX Runtime's int8 graph rounds, and read them back for export.

:func:`quantize_layer` runs the model once (eval mode, zeros) with hooks to see which tensor each Conv2D, Linear
and BatchNorm reads and writes, then, for every Conv2D / Linear (the ``Conv`` / ``MatMul`` nodes ONNX Runtime
quantizes):

* its weight is quantized per output channel (the class is swapped to :class:`QuantConv2D` /
  :class:`QuantLinear`: parameters and their names stay as they are, so fp32 checkpoints still load);
* its output is quantized: after the BatchNorm that reads it when there is one (ONNX Runtime folds that
  BatchNorm into the convolution; the quantizer lives on the BatchNorm), before the bias for a Linear;
* its input is quantized unless it is the output of another quantized layer (then it is already uint8 in
  ONNX Runtime's graph, with that layer's scale).

:func:`quant_points` lists, per quantized layer, its weight's parameter name (the name the ONNX graph gives the
weight initializer) and its quantizers, which :mod:`ppssld.export.qad` turns into ONNX Runtime's
``TensorQuantOverrides``; :func:`float_forward` runs the model without any fake quantization (the fp32 graph
that is exported and then quantized).
"""
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

import paddle
import paddle.nn as nn

from ppssld.slim.fake_quant import WEIGHT_QMAX, WEIGHT_QMAX_REDUCED
from ppssld.slim.layers import FLOAT_CLASS, INPUT_QUANT, OUTPUT_QUANT, QUANT_CLASS, ActQuant, QuantConv2D, QuantLinear
from ppssld.slim.settings import check_slim, quantized_model, trace_shape
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

BN_TYPES = (nn.BatchNorm, nn.BatchNorm2D)  # the BatchNorm classes a quantized convolution's output may pass
# a quantized Conv2D's attribute: the path of the BatchNorm that holds its output quantizer ("" when it holds it)
HOST_ATTR = "quant_output_host"
PATH_ATTR = "quant_path"  # its own path under the layer quantize_layer was given
QUANT_KEY_PARTS = (f".{INPUT_QUANT}.", f".{OUTPUT_QUANT}.")


@dataclass
class QuantPoint:
    """One quantized Conv2D / Linear: where it is, its weight's parameter name, its activation quantizers."""
    path: str
    kind: str  # "conv" or "linear"
    weight_name: str
    input: Optional[ActQuant]
    output: ActQuant
    weight_qmax: int


def _targets(layer: nn.Layer) -> Dict[str, nn.Layer]:
    return {name: sub for name, sub in layer.named_sublayers(include_self=True)
            if type(sub) in (nn.Conv2D, nn.Linear)}


def _trace(layer: nn.Layer, image_shape: Sequence[int]) -> Dict[str, Dict[str, List[int]]]:
    """``{path: {"in": [tensor ids], "out": [...]}}`` of every Conv2D / Linear / BatchNorm in one eval forward."""
    watched = {name: sub for name, sub in layer.named_sublayers(include_self=True)
               if isinstance(sub, (nn.Conv2D, nn.Linear) + BN_TYPES)}
    seen: Dict[str, Dict[str, List[int]]] = {name: {"in": [], "out": []} for name in watched}
    keep: List[Any] = []  # the traced tensors stay alive, so no id is reused

    def hooks(name: str) -> tuple:
        def pre(_layer: nn.Layer, inputs: Any) -> None:
            keep.append(inputs[0])
            seen[name]["in"].append(id(inputs[0]))

        def post(_layer: nn.Layer, _inputs: Any, output: Any) -> None:
            keep.append(output)
            seen[name]["out"].append(id(output))
        return pre, post

    handles = []
    for name, sub in watched.items():
        pre, post = hooks(name)
        handles += [sub.register_forward_pre_hook(pre), sub.register_forward_post_hook(post)]
    was_training = layer.training
    layer.eval()
    try:
        with paddle.no_grad():
            layer(paddle.zeros([1] + list(image_shape), dtype="float32"))
    finally:
        for handle in handles:
            handle.remove()
        if was_training:
            layer.train()
    return seen


def quantize_layer(layer: nn.Layer, image_shape: Sequence[int], moving_rate: float = 0.9, pact: bool = False,
                   where: str = "the model", reduce_range: bool = True) -> List[QuantPoint]:
    """Insert the fake-quant layers into ``layer`` in place (see the module docstring); ``reduce_range``: 7-bit
    weights (``[-64, 64]``, :data:`ppssld.slim.fake_quant.WEIGHT_QMAX_REDUCED`), else ``[-127, 127]``.

    Raises:
        ConfigError: nothing to quantize, a layer that runs more than once per forward (shared weights), a
            BatchNorm with a built-in activation after a convolution (ONNX Runtime rounds before it).
    """
    fused = [name for name, sub in layer.named_sublayers() if hasattr(sub, "re_parameterize")]
    if fused:
        raise ConfigError(f"Slim.quant: {where} is re-parameterised for inference ({fused[0]} ...: RepVGG-style "
                          f"branches fused at export), so the trained weights are not the exported ones: "
                          f"quantizing it is not implemented")
    targets = _targets(layer)
    if not targets:
        raise ConfigError(f"Slim.quant: {where} has no Conv2D or Linear layer: nothing ONNX Runtime would run "
                          f"in int8")
    seen = _trace(layer, image_shape)
    bn_by_input = {ids["in"][0]: name for name, ids in seen.items() if name not in targets and len(ids["in"]) == 1}
    subs = dict(layer.named_sublayers())
    plan: Dict[str, Optional[str]] = {}  # quantized layer -> the BatchNorm that holds its output quantizer
    outputs = set()  # ids of the tensors an output quantizer rounds
    for name, sub in targets.items():
        runs = len(seen[name]["out"])
        if runs > 1:
            raise ConfigError(f"Slim.quant: {where}.{name} runs {runs} times in one forward (shared weights): "
                              f"fake quantization of such a layer is not implemented")
        if runs == 0:
            logger.info("Slim.quant: %s.%s does not run in the forward: left in float", where, name)
            continue
        host = bn_by_input.get(seen[name]["out"][0]) if isinstance(sub, nn.Conv2D) else None
        if host is not None and type(subs[host]) not in QUANT_CLASS:
            raise ConfigError(f"Slim.quant: {where}.{host} ({type(subs[host]).__name__}) follows a convolution but "
                              f"is not a paddle.nn BatchNorm / BatchNorm2D: not implemented")
        if host is not None and getattr(subs[host], "_act", None):
            raise ConfigError(f"Slim.quant: {where}.{host} is a BatchNorm with a built-in activation after a "
                              f"convolution; ONNX Runtime quantizes before that activation: not implemented")
        outputs.add(seen[host]["out"][0] if host is not None else seen[name]["out"][0])
        plan[name] = host
    for name, host in plan.items():
        sub = targets[name]
        sub.__class__ = QuantConv2D if isinstance(sub, nn.Conv2D) else QuantLinear  # exact classes: see _targets
        sub.weight_qmax = WEIGHT_QMAX_REDUCED if reduce_range else WEIGHT_QMAX
        if seen[name]["in"][0] not in outputs:
            sub.add_sublayer(INPUT_QUANT, ActQuant(moving_rate, pact))
        if host is None:
            sub.add_sublayer(OUTPUT_QUANT, ActQuant(moving_rate, pact))
        else:
            bn = subs[host]
            bn.add_sublayer(OUTPUT_QUANT, ActQuant(moving_rate, pact))
            bn.__class__ = QUANT_CLASS[type(bn)]
        setattr(sub, HOST_ATTR, host or "")
        setattr(sub, PATH_ATTR, name)
    found = quant_points(layer)
    logger.info("Slim.quant: %s: %d layers fake-quantized (%d Conv2D, %d Linear), %d activation quantizers%s",
                where, len(found), sum(p.kind == "conv" for p in found), sum(p.kind == "linear" for p in found),
                len(found) + sum(p.input is not None for p in found), " with PACT clipping" if pact else "")
    return found


def quantize_student(model: nn.Layer, config: Dict[str, Any]) -> List[QuantPoint]:
    """Apply ``Slim.quant`` to ``model`` in place: to the infer model (student) of a DistillationModel, to a plain
    model as a whole; nothing without ``Slim.quant``. A model built alone (export, eval) passes as plain.

    Returns:
        The quantized layers (empty without ``Slim.quant``).
    """
    settings = check_slim(config)
    if settings is None:
        return []
    name = quantized_model(config.get("Arch") or {})
    held = getattr(model, "names", None)
    target = getattr(model, name) if name is not None and held is not None and name in held else model
    return quantize_layer(target, trace_shape(config), settings.moving_rate, settings.pact,
                          where=f"Arch.models.{name}" if name else "Arch", reduce_range=settings.reduce_range)


def quant_points(layer: nn.Layer) -> List[QuantPoint]:
    """The quantized layers under ``layer`` (the quantized model or a model holding it), in definition order;
    empty for a float model."""
    subs = dict(layer.named_sublayers(include_self=True))
    points = []
    for name, sub in subs.items():
        if not isinstance(sub, (QuantConv2D, QuantLinear)):
            continue
        host = getattr(sub, HOST_ATTR, "")
        root = name[: len(name) - len(getattr(sub, PATH_ATTR))]  # "Student." when ``layer`` holds the student
        owner = subs[root + host] if host else sub
        points.append(QuantPoint(name, "conv" if isinstance(sub, QuantConv2D) else "linear", sub.weight.name,
                                 getattr(sub, INPUT_QUANT, None), getattr(owner, OUTPUT_QUANT), sub.weight_qmax))
    return points


@contextlib.contextmanager
def float_forward(layer: nn.Layer) -> Iterator[nn.Layer]:
    """Within the block, ``layer`` computes in float with its trained weights: every fake-quant class is swapped
    back to its Paddle class (so ``paddle.jit.to_static`` sees built-in layers and the exported graph is the
    plain model's)."""
    switched = [(sub, type(sub)) for sub in layer.sublayers(include_self=True) if type(sub) in FLOAT_CLASS]
    for sub, cls in switched:
        sub.__class__ = FLOAT_CLASS[cls]
    try:
        yield layer
    finally:
        for sub, cls in switched:
            sub.__class__ = cls


def is_quant_key(key: str) -> bool:
    """Whether a state-dict key belongs to a fake-quant layer (``...input_quant.range`` ...)."""
    return any(part in f".{key}" for part in QUANT_KEY_PARTS)


def with_fresh_quantizers(model: nn.Layer, state: Dict[str, Any], where: str) -> Dict[str, Any]:
    """``state`` (a float checkpoint: no quantizer key at all) completed with ``model``'s own, not yet trained,
    quantizer entries, so a strict load passes; a state that holds quantizer keys is returned as it is (a
    mismatch is then the strict loader's to report)."""
    own = {k: v for k, v in model.state_dict().items() if is_quant_key(k)}
    if not own or any(is_quant_key(k) for k in state):
        return state
    logger.info("%s holds float weights only: its %d activation quantizer entries start untrained (their "
                "ranges come from the first training batches)", where, len(own))
    return {**state, **own}
