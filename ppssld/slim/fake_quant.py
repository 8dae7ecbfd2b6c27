"""Fake quantization in ONNX Runtime's int8 scheme, with straight-through gradients.

The int8 model ppssld deploys is written by ONNX Runtime's static quantization (:mod:`ppssld.export.quantize`):

* **weights**: int8, symmetric, one scale per output channel: ``scale_c = max|w_c| / qmax``,
  ``q = clip(round(w / scale_c), -qmax, qmax)``, zero point 0, with ``qmax`` 127, or 64 with ONNX Runtime's
  ``reduce_range`` (7-bit weights; see :data:`WEIGHT_QMAX_REDUCED`);
* **activations**: uint8, asymmetric, one scale per tensor from a range ``[rmin, rmax]`` widened to hold 0:
  ``scale = (rmax - rmin) / 255``, ``zero_point = round(-rmin / scale)``, ``q = clip(round(x / scale) + zp, 0, 255)``.

``round`` is half to even, as ``numpy.round`` and ONNX Runtime's ``QuantizeLinear``. These functions return the
dequantized values (``(q - zp) * scale``), so a float model trained through them sees the rounding the int8
model applies. Gradients are straight-through: identity for weights (abs-max scales clip nothing), identity
inside the representable activation range and zero outside it (the clipped values).
"""
from typing import Tuple

import paddle

WEIGHT_QMAX = 127  # int8 symmetric: [-127, 127] (ONNX Runtime's symmetric int8 range)
# ONNX Runtime's reduce_range int8 weights: [-64, 64]. On x86 CPUs without VNNI its u8 x s8 kernels add pairs of
# products in int16 (vpmaddubsw), which saturates for full-range weights (255 * 127 * 2 > 32767): the int8 model
# then computes something else than integer arithmetic (and than training simulated). 255 * 64 * 2 = 32640 fits.
WEIGHT_QMAX_REDUCED = 64
ACT_QMAX = 255  # uint8: [0, 255]
_FLOAT32_TINY = 1.1754943508222875e-38  # numpy.finfo(float32).tiny: a smaller scale means an empty range


def activation_qparams(rmin: paddle.Tensor, rmax: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """``(scale, zero_point)`` of a uint8 tensor with range ``[rmin, rmax]``, as ONNX Runtime computes them.

    The range is widened to hold 0; the scale is worked out in float64 and stored as float32; an empty range
    (scale below float32's smallest normal) gives scale 1, zero point 0. Both results are float32 0-D tensors
    (the zero point holds an integer in [0, 255]).
    """
    lo = paddle.minimum(rmin.astype("float64"), paddle.zeros([], "float64"))
    hi = paddle.maximum(rmax.astype("float64"), paddle.zeros([], "float64"))
    scale = (hi - lo) / float(ACT_QMAX)
    empty = scale < _FLOAT32_TINY
    safe = paddle.where(empty, paddle.ones_like(scale), scale)
    zero = paddle.clip(paddle.round(-lo / safe), 0.0, float(ACT_QMAX))
    zero = paddle.where(empty, paddle.zeros_like(zero), zero)
    return safe.astype("float32"), zero.astype("float32")


def fake_quant_activation(x: paddle.Tensor, scale: paddle.Tensor, zero_point: paddle.Tensor) -> paddle.Tensor:
    """``x`` through uint8 (``scale``, ``zero_point``) and back; the gradient passes where ``x`` is not clipped."""
    scale = scale.detach()
    zero_point = zero_point.detach()
    low = -zero_point * scale
    high = (float(ACT_QMAX) - zero_point) * scale
    q = paddle.clip(paddle.round(x.detach() / scale) + zero_point, 0.0, float(ACT_QMAX))
    dequant = (q - zero_point) * scale
    clipped = paddle.clip(x, low, high)  # carries the gradient: 1 inside the range, 0 outside
    return clipped + (dequant - clipped).detach()


def weight_scales(weight: paddle.Tensor, axis: int, qmax: int = WEIGHT_QMAX) -> paddle.Tensor:
    """One symmetric int8 scale per slice of ``weight`` along ``axis`` (``max|w| / qmax``; 1 for an all-zero
    slice), shaped to broadcast against ``weight``."""
    dims = [d for d in range(weight.ndim) if d != axis]
    absmax = paddle.amax(paddle.abs(weight.detach()), axis=dims, keepdim=True)
    scale = (absmax.astype("float64") * 2.0 / (2.0 * qmax)).astype("float32")
    return paddle.where(scale < _FLOAT32_TINY, paddle.ones_like(scale), scale)


def fake_quant_weight(weight: paddle.Tensor, axis: int, qmax: int = WEIGHT_QMAX) -> paddle.Tensor:
    """``weight`` through int8 (``[-qmax, qmax]``) per slice along ``axis`` (the output channels) and back;
    identity gradient."""
    scale = weight_scales(weight, axis, qmax)
    q = paddle.clip(paddle.round(weight.detach() / scale), -float(qmax), float(qmax))
    return weight + (q * scale - weight).detach()
