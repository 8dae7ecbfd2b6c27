"""The fake-quant layers: activation quantizers (moving-average min/max, optionally PACT-clipped) and the
Conv2D / Linear forwards that quantize their weights (per output channel) and activations.

Where each activation quantizer sits follows ONNX Runtime's QOperator graph (:mod:`ppssld.slim.apply` decides):
a ``QLinearConv`` / ``QLinearMatMul`` reads uint8 inputs and writes a uint8 output, so a Conv2D quantizes its
input and its output, the output being taken after the BatchNorm that ONNX Runtime folds into the convolution;
a Linear becomes ``MatMul`` + ``Add``, so its output is quantized before the bias.

Each layer is quantized by swapping its class for a subclass whose ``forward`` adds the rounding: its parameters
and their names stay, so a float checkpoint loads into it and its own checkpoint keeps PaddleClas's keys
(plus the quantizers' ``input_quant.*`` / ``output_quant.*``).
"""
import logging
from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppssld.slim.fake_quant import WEIGHT_QMAX, activation_qparams, fake_quant_activation, fake_quant_weight
from ppssld.utils.errors import WeightsError

logger = logging.getLogger(__name__)

INPUT_QUANT = "input_quant"
OUTPUT_QUANT = "output_quant"
CONV_WEIGHT_AXIS = 0  # Conv2D weight [out, in / groups, kh, kw]
LINEAR_WEIGHT_AXIS = 1  # Linear weight [in, out]


class ActQuant(nn.Layer):
    """One uint8 activation tensor: its range, its fake quantization.

    In training the range follows the batches' min and max as a moving average (the first batch sets it);
    in eval the stored range is used (there must be one). With ``pact`` the tensor is first clipped to two
    trainable bounds (PACT: their gradient is the clipped values' gradient; the optimizer's weight decay pulls
    them in), initialised to the first batch's range. The range (a ``[2]`` buffer ``range``, with ``ready`` 0/1)
    is in the checkpoint and is what the int8 export uses.

    Args:
        moving_rate: weight of the old range in the moving average, in [0, 1).
        pact: add the trainable clipping bounds.
    """

    def __init__(self, moving_rate: float = 0.9, pact: bool = False) -> None:
        super().__init__()
        self.moving_rate = float(moving_rate)
        self.register_buffer("range", paddle.zeros([2], "float32"), persistable=True)
        self.register_buffer("ready", paddle.zeros([1], "float32"), persistable=True)
        self.bounds: Optional[paddle.Tensor] = None
        if pact:
            self.bounds = self.create_parameter([2], dtype="float32",
                                                default_initializer=nn.initializer.Constant(0.0))
        self._known_ready = False  # once a range is there it stays: read the buffer (a device sync) until then

    def is_ready(self) -> bool:
        """Whether a range has been observed (or loaded)."""
        if not self._known_ready:
            self._known_ready = bool(float(self.ready.numpy()[0]) > 0.5)
        return self._known_ready

    def qparams(self) -> tuple:
        """``(scale, zero_point)`` of the current range (float32 0-D tensors)."""
        return activation_qparams(self.range[0], self.range[1])

    @paddle.no_grad()
    def _observe(self, x: paddle.Tensor, first: bool) -> None:
        now = paddle.stack([paddle.min(x), paddle.max(x)]).astype("float32")
        if first:
            paddle.assign(now, self.range)
            paddle.assign(paddle.ones([1], "float32"), self.ready)
            if self.bounds is not None:
                self.bounds.set_value(now)
            self._known_ready = True
            return
        paddle.assign(self.range * self.moving_rate + now * (1.0 - self.moving_rate), self.range)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """Observe (training) and fake-quantize ``x``."""
        first = not self.is_ready()
        if first and not self.training:
            raise WeightsError("an activation quantizer of the Slim.quant model has no range: its weights come from a "
                               "float checkpoint, never trained with Slim.quant; train with Slim.quant first, or "
                               "evaluate the float model without the Slim section")
        if self.bounds is not None and not first:
            low, high = self.bounds[0], self.bounds[1]
            x = x - F.relu(x - high) + F.relu(low - x)  # PACT: clip(x, low, high), the bounds trainable
        if self.training or first:
            self._observe(x, first)
        scale, zero = self.qparams()
        return fake_quant_activation(x, scale, zero)


class QuantConv2D(nn.Conv2D):
    """A Conv2D (class swapped in place: same parameters, same names) whose weight is int8 per output channel
    (``[-weight_qmax, weight_qmax]``); ``input_quant`` / ``output_quant`` sublayers, when present, quantize its
    input and output."""

    weight_qmax = WEIGHT_QMAX

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """The convolution of the quantized input with the quantized weight (bias in float, as int32 in ONNX)."""
        if hasattr(self, INPUT_QUANT):
            x = getattr(self, INPUT_QUANT)(x)
        if self._padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self._padding_mode,
                      data_format=self._data_format)
        weight = fake_quant_weight(self.weight, CONV_WEIGHT_AXIS, self.weight_qmax)
        out = F.conv2d(x, weight, self.bias, stride=self._stride, padding=self._padding if
                       self._padding_mode == "zeros" else 0, dilation=self._dilation, groups=self._groups,
                       data_format=self._data_format)
        if hasattr(self, OUTPUT_QUANT):
            out = getattr(self, OUTPUT_QUANT)(out)
        return out


class QuantLinear(nn.Linear):
    """A Linear (class swapped in place) computed as ONNX Runtime runs it: ``QLinearMatMul`` on the quantized
    input and weight (per output column), its output quantized, then the float bias ``Add``."""

    weight_qmax = WEIGHT_QMAX

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """``quant(quant(x) @ quant(W)) + b``."""
        if hasattr(self, INPUT_QUANT):
            x = getattr(self, INPUT_QUANT)(x)
        out = paddle.matmul(x, fake_quant_weight(self.weight, LINEAR_WEIGHT_AXIS, self.weight_qmax))
        if hasattr(self, OUTPUT_QUANT):
            out = getattr(self, OUTPUT_QUANT)(out)
        return out if self.bias is None else out + self.bias


class QuantBatchNorm(nn.BatchNorm):
    """A BatchNorm after a quantized Conv2D (class swapped in place): its ``output_quant`` quantizes its output,
    the folded convolution's output in ONNX Runtime's graph."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """BatchNorm, then the output quantizer."""
        return getattr(self, OUTPUT_QUANT)(super().forward(x))


class QuantBatchNorm2D(nn.BatchNorm2D):
    """:class:`QuantBatchNorm` for ``nn.BatchNorm2D``."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """BatchNorm, then the output quantizer."""
        return getattr(self, OUTPUT_QUANT)(super().forward(x))


# each fake-quant class and the Paddle class it was swapped in for (and is swapped back to for a float forward)
FLOAT_CLASS = {QuantConv2D: nn.Conv2D, QuantLinear: nn.Linear, QuantBatchNorm: nn.BatchNorm,
               QuantBatchNorm2D: nn.BatchNorm2D}
QUANT_CLASS = {base: quant for quant, base in FLOAT_CLASS.items()}
