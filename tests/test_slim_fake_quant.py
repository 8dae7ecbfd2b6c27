"""Fake quantization (ppssld.slim.fake_quant, ppssld.slim.layers) against numpy references and ONNX Runtime's own
quantization arithmetic: scales and zero points, rounding (half to even), clipping, per-channel weight scales,
straight-through gradients, the moving-average range and PACT's clipping bounds."""
import numpy as np
import paddle
import pytest

from ppssld.slim.fake_quant import (WEIGHT_QMAX, WEIGHT_QMAX_REDUCED, activation_qparams, fake_quant_activation,
                                    fake_quant_weight, weight_scales)
from ppssld.slim.layers import ActQuant

ort_quant = pytest.importorskip("onnxruntime.quantization.quant_utils")
from onnx import TensorProto  # noqa: E402  (onnx comes with onnxruntime's quantization)


def np_act_qparams(rmin: float, rmax: float) -> tuple:
    """uint8 asymmetric (scale, zero point), written from the formulas (range widened to hold 0)."""
    lo, hi = min(float(np.float32(rmin)), 0.0), max(float(np.float32(rmax)), 0.0)
    scale = (hi - lo) / 255.0
    if scale < np.finfo(np.float32).tiny:
        return np.float32(1.0), 0.0
    return np.float32(scale), float(np.clip(np.round(-lo / scale), 0, 255))


def np_fake_act(x: np.ndarray, scale: np.float32, zero: float) -> np.ndarray:
    q = np.clip(np.round(x.astype(np.float32) / scale) + zero, 0, 255)
    return ((q - zero) * scale).astype(np.float32)


@pytest.mark.parametrize("rmin,rmax", [(-1.3, 2.7), (0.2, 5.0), (-4.0, -0.5), (0.0, 0.0), (-0.375, 6.1), (-1e-3, 0.0)])
def test_activation_qparams_are_onnx_runtimes(rmin, rmax):
    scale, zero = activation_qparams(paddle.to_tensor(rmin, "float32"), paddle.to_tensor(rmax, "float32"))
    ref_scale, ref_zero = np_act_qparams(rmin, rmax)
    assert float(scale) == ref_scale and float(zero) == ref_zero
    ort_zero, ort_scale = ort_quant.compute_scale_zp(np.array(rmin, np.float32), np.array(rmax, np.float32),
                                                     np.array(0, np.uint8), np.array(255, np.uint8))
    assert np.float32(ort_scale) == np.float32(scale.numpy()) and int(ort_zero) == int(zero)


def test_activation_rounding_clipping_and_ties():
    rng = np.random.RandomState(0)
    x = np.concatenate([rng.randn(5000) * 2, [-100.0, 100.0]]).astype(np.float32)  # the last two are clipped
    scale, zero = activation_qparams(paddle.to_tensor(-2.5), paddle.to_tensor(3.5))
    got = fake_quant_activation(paddle.to_tensor(x), scale, zero).numpy()
    np.testing.assert_array_equal(got, np_fake_act(x, np.float32(scale.numpy()), float(zero)))
    levels = np.unique(np.round(got / float(scale)))
    assert len(levels) <= 256 and got.min() == pytest.approx(-float(zero) * float(scale))
    # ties round to even, as numpy and ONNX Runtime's QuantizeLinear: scale 0.5 (exact), zero point 0
    half, z0 = paddle.to_tensor(0.5), paddle.to_tensor(0.0)
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.25], np.float32)  # x / scale = 0.5, 1.5, 2.5, 3.5, 4.5
    np.testing.assert_array_equal(fake_quant_activation(paddle.to_tensor(ties), half, z0).numpy(),
                                  np.array([0.0, 1.0, 1.0, 2.0, 2.0], np.float32))


def test_activation_gradient_is_straight_through_inside_the_range_only():
    scale, zero = activation_qparams(paddle.to_tensor(-1.0), paddle.to_tensor(1.0))
    low, high = -float(zero) * float(scale), (255 - float(zero)) * float(scale)
    x = paddle.to_tensor(np.array([-3.0, low + 1e-3, -0.3, 0.0, 0.41, high - 1e-3, 2.0], np.float32),
                         stop_gradient=False)
    upstream = paddle.to_tensor(np.arange(1, 8, dtype=np.float32))
    (fake_quant_activation(x, scale, zero) * upstream).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.array([0, 2, 3, 4, 5, 6, 0], np.float32))


@pytest.mark.parametrize("qmax,reduce", [(WEIGHT_QMAX, False), (WEIGHT_QMAX_REDUCED, True)])
@pytest.mark.parametrize("shape,axis", [((6, 3, 3, 3), 0), ((16, 5), 1)])
def test_weights_per_output_channel_match_onnx_runtime(qmax, reduce, shape, axis):
    rng = np.random.RandomState(1)
    w = (rng.randn(*shape) * rng.uniform(0.01, 2.0, [shape[axis] if d == axis else 1 for d in range(len(shape))]))
    w = w.astype(np.float32)
    if axis == 0:
        w[2] = 0.0  # an all-zero channel: scale 1, values 0
    got = fake_quant_weight(paddle.to_tensor(w), axis, qmax).numpy()
    for c in range(shape[axis]):
        chan = np.take(w, c, axis)
        zero, scale, q = ort_quant.quantize_data(chan.flatten(), TensorProto.INT8, True, reduce_range=reduce)
        assert int(zero) == 0 and np.abs(q).max() <= qmax
        np.testing.assert_allclose(np.take(got, c, axis).flatten(), q.astype(np.float32) * scale, rtol=0, atol=1e-7)
    scales = weight_scales(paddle.to_tensor(w), axis, qmax).numpy().squeeze()
    expected = np.abs(w).max(axis=tuple(d for d in range(w.ndim) if d != axis)) / qmax
    np.testing.assert_allclose(scales[expected > 0], expected[expected > 0], rtol=1e-6)


def test_weight_gradient_is_identity():
    w = paddle.to_tensor(np.random.RandomState(2).randn(4, 3, 3, 3).astype(np.float32), stop_gradient=False)
    upstream = paddle.to_tensor(np.random.RandomState(3).randn(4, 3, 3, 3).astype(np.float32))
    (fake_quant_weight(w, 0) * upstream).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), upstream.numpy())


def test_moving_average_range_and_eval():
    quant = ActQuant(moving_rate=0.9)
    quant.train()
    batches = [np.array([-1.0, 2.0]), np.array([-3.0, 1.0]), np.array([0.5, 4.0])]
    expected = None
    for batch in batches:
        quant(paddle.to_tensor(batch.astype(np.float32)))
        now = np.array([batch.min(), batch.max()])
        expected = now if expected is None else 0.9 * expected + 0.1 * now
        np.testing.assert_allclose(quant.range.numpy(), expected, rtol=1e-6)
    quant.eval()
    before = quant.range.numpy().copy()
    out = quant(paddle.to_tensor(np.array([-50.0, 50.0], np.float32))).numpy()  # eval: no update, clipped
    np.testing.assert_array_equal(quant.range.numpy(), before)
    scale, zero = activation_qparams(paddle.to_tensor(before[0]), paddle.to_tensor(before[1]))
    np.testing.assert_allclose(out, [-float(zero) * float(scale), (255 - float(zero)) * float(scale)], rtol=1e-6)


def test_pact_bounds_start_at_the_first_range_and_learn_from_clipped_values():
    quant = ActQuant(moving_rate=0.9, pact=True)
    quant.train()
    quant(paddle.to_tensor(np.array([-1.0, 0.0, 2.0], np.float32)))
    np.testing.assert_array_equal(quant.bounds.numpy(), [-1.0, 2.0])
    x = paddle.to_tensor(np.array([-1.5, 0.3, 2.5, 3.0], np.float32), stop_gradient=False)
    upstream = paddle.to_tensor(np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    (quant(x) * upstream).sum().backward()
    # PACT: the clipped values' gradient goes to the bound they hit, none to the input
    np.testing.assert_allclose(quant.bounds.grad.numpy(), [1.0, 7.0])
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 2.0, 0.0, 0.0])
    assert quant.range.numpy()[1] <= 2.0 + 1e-6  # the observed range is of the clipped tensor
