"""Gradient clipping: ``clip_grad`` by global norm, ``clip_norm`` per tensor, against numpy."""
import logging

import numpy as np
import paddle
import pytest

from ppssld.optim import build_optimizer


def _layer_and_grads(seed: int = 0):
    """A two-layer net with one backward done; returns it, its weights and numpy gradients."""
    paddle.seed(seed)
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 3), paddle.nn.Linear(3, 2))
    x = paddle.to_tensor(np.random.RandomState(seed).randn(5, 4).astype("float32") * 10)
    (net(x) ** 2).sum().backward()
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    grads = {n: p.grad.numpy().copy() for n, p in net.named_parameters()}
    return net, before, grads


def _applied_update(cfg):
    """One plain-SGD step (lr 1, no decay): the update applied equals the clipped gradient."""
    net, before, grads = _layer_and_grads()
    opt, _ = build_optimizer(cfg, net, epochs=1, steps_per_epoch=1)
    opt.step()
    return {n: before[n] - p.numpy() for n, p in net.named_parameters()}, grads


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_is_global_norm_clipping(max_norm, caplog):
    caplog.set_level(logging.INFO, logger="ppssld.optim.builder")
    cfg = {"name": "SGD", "lr": {"name": "Constant", "learning_rate": 1.0}, "clip_grad": max_norm}
    update, grads = _applied_update(cfg)
    total = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    assert total > 0.5  # the small bound really clips
    scale = max_norm / max(total, max_norm)
    for name, grad in grads.items():
        np.testing.assert_allclose(update[name], grad * scale, rtol=1e-5, atol=1e-6)
    if max_norm == 0.5:
        got = np.sqrt(sum(float((u.astype(np.float64) ** 2).sum()) for u in update.values()))
        np.testing.assert_allclose(got, 0.5, rtol=1e-5)


def test_clip_grad_note_logged_once(caplog):
    caplog.set_level(logging.INFO, logger="ppssld.optim.builder")
    cfg = {"name": "SGD", "lr": {"name": "Constant", "learning_rate": 1.0}, "clip_grad": 2.0}
    for _ in range(3):
        build_optimizer(cfg, _layer_and_grads()[0], epochs=1, steps_per_epoch=1, where="OptimizerLogOnce")
    notes = [r for r in caplog.records if "clip_grad" in r.getMessage() and "ignores it" in r.getMessage()]
    assert len(notes) == 1


@pytest.mark.parametrize("value", [None, "None"])
def test_clip_grad_null_or_paddleclas_none_does_not_clip(value):
    cfg = {"name": "SGD", "lr": {"name": "Constant", "learning_rate": 1.0}, "clip_grad": value}
    update, grads = _applied_update(cfg)
    for name, grad in grads.items():
        np.testing.assert_allclose(update[name], grad, rtol=1e-5, atol=1e-6)


def test_clip_norm_clips_each_tensor_as_paddleclas():
    cfg = {"name": "SGD", "lr": {"name": "Constant", "learning_rate": 1.0}, "clip_norm": 0.5}
    update, grads = _applied_update(cfg)
    for name, grad in grads.items():
        norm = np.sqrt((grad.astype(np.float64) ** 2).sum())
        np.testing.assert_allclose(update[name], grad * 0.5 / max(norm, 0.5), rtol=1e-5, atol=1e-6)


def test_clip_grad_config_is_not_mutated():
    cfg = {"name": "AdamW", "lr": {"name": "Constant", "learning_rate": 0.1}, "clip_grad": 1.0}
    build_optimizer(cfg, _layer_and_grads()[0], epochs=1, steps_per_epoch=1)
    assert cfg["clip_grad"] == 1.0
