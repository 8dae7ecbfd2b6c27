"""Optimizers and LR schedules: closed-form values, decay, lr_mult_list, resume, config errors."""
import math
import os

import numpy as np
import paddle
import pytest
import yaml

from ppssld.optim import build_lr_scheduler, build_optimizer, validate_optimizer_config
from ppssld.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def momentum_cfg(lr, **extra):
    cfg = {"name": "Momentum", "momentum": 0.9, "lr": lr}
    cfg.update(extra)
    return cfg


def values(sched, n):
    """Learning rates of the first n iterations, stepping as the engine does."""
    out = []
    for _ in range(n):
        out.append(sched())
        sched.step()
    return out


# ---------------------------------------------------------------- schedules
def test_cosine_with_warmup_closed_form():
    sched = build_lr_scheduler({"name": "Cosine", "learning_rate": 0.1, "warmup_epoch": 1,
                                "warmup_start_lr": 0.01, "eta_min": 0.001}, epochs=3, steps_per_epoch=4)
    got = values(sched, 12)
    warm = [0.01 + (0.1 - 0.01) * i / 4 for i in range(4)]
    cos = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * u / 8)) / 2 for u in range(8)]
    np.testing.assert_allclose(got, warm + cos, rtol=1e-12)


def test_cosine_matches_paddleclas_composition():
    """PaddleClas builds LinearWarmup(CosineAnnealingDecay(T_max=(epochs-warmup)*steps))."""
    epochs, steps, warm = 5, 7, 2
    ref = paddle.optimizer.lr.LinearWarmup(
        paddle.optimizer.lr.CosineAnnealingDecay(0.4, T_max=(epochs - warm) * steps, eta_min=0.0),
        warmup_steps=warm * steps, start_lr=0.0, end_lr=0.4)
    ours = build_lr_scheduler({"name": "Cosine", "learning_rate": 0.4, "warmup_epoch": warm}, epochs, steps)
    np.testing.assert_allclose(values(ours, epochs * steps), values(ref, epochs * steps), rtol=1e-6, atol=1e-9)


def test_warmup_steps_and_by_epoch():
    sched = build_lr_scheduler({"name": "Cosine", "learning_rate": 1.0, "warmup_steps": 2}, 2, 3)
    np.testing.assert_allclose(values(sched, 3), [0.0, 0.5, 1.0])
    per_epoch = build_lr_scheduler({"name": "Cosine", "learning_rate": 1.0, "by_epoch": True}, 4, 3)
    got = values(per_epoch, 12)
    expected = [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(4) for _ in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_piecewise_boundaries_are_absolute_epochs():
    sched = build_lr_scheduler({"name": "Piecewise", "decay_epochs": [2, 4], "values": [0.1, 0.01, 0.001],
                                "warmup_epoch": 1}, epochs=6, steps_per_epoch=3)
    got = values(sched, 18)
    expected = [0.0, 0.1 / 3, 0.2 / 3] + [0.1] * 3 + [0.01] * 6 + [0.001] * 6
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_piecewise_learning_rate_rule_and_constant_default():
    sched = build_lr_scheduler({"name": "Piecewise", "learning_rate": 0.1}, epochs=100, steps_per_epoch=1)
    assert sched.decay_epochs == [30, 60, 90]
    np.testing.assert_allclose([sched.value_at(e) for e in (29, 30, 59, 60, 90)],
                               [0.1, 0.01, 0.01, 0.001, 0.0001])
    const = build_lr_scheduler({"learning_rate": 0.3}, epochs=2, steps_per_epoch=2)
    assert type(const).__name__ == "Constant" and values(const, 4) == [0.3] * 4


def test_scheduler_state_round_trip_through_optimizer():
    cfg = momentum_cfg({"name": "Cosine", "learning_rate": 0.1, "warmup_epoch": 1})
    layer = paddle.nn.Linear(2, 2)
    opt, sched = build_optimizer(cfg, layer, epochs=4, steps_per_epoch=5)
    values(sched, 7)
    state = opt.state_dict()
    opt2, sched2 = build_optimizer(cfg, layer, epochs=4, steps_per_epoch=5)
    opt2.set_state_dict(state)
    assert sched2.last_epoch == 7
    assert values(sched2, 13) == values(sched, 13)
    sched3 = build_lr_scheduler(cfg["lr"], 4, 5)
    sched3.set_state_dict(sched2.state_dict())
    assert sched3() == sched2()


# ---------------------------------------------------------------- decay
def zero_grad_step(layer, opt):
    (layer(paddle.ones([1, layer.weight.shape[0]])) * 0.0).sum().backward()
    opt.step()
    opt.clear_grad()


@pytest.mark.parametrize("decay", [{"regularizer": {"name": "L2", "coeff": 0.5}}, {"weight_decay": 0.5}])
def test_l2_decay_applied_and_no_weight_decay_name(decay):
    layer = paddle.nn.Linear(3, 2, bias_attr=paddle.ParamAttr(
        initializer=paddle.nn.initializer.Constant(1.0)))
    w0, b0 = layer.weight.numpy().copy(), layer.bias.numpy().copy()
    opt, _ = build_optimizer(momentum_cfg({"learning_rate": 0.1}, no_weight_decay_name="bias", **decay),
                             layer, epochs=1, steps_per_epoch=1)
    zero_grad_step(layer, opt)
    np.testing.assert_allclose(layer.weight.numpy(), w0 * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), b0)


def test_adamw_decoupled_decay_and_one_dim_exclusion():
    layer = paddle.nn.Linear(3, 2, bias_attr=paddle.ParamAttr(
        initializer=paddle.nn.initializer.Constant(1.0)))
    w0 = layer.weight.numpy().copy()
    cfg = {"name": "AdamW", "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.2,
           "one_dim_param_no_weight_decay": True, "lr": {"name": "Constant", "learning_rate": 0.5}}
    opt, _ = build_optimizer(cfg, list(layer.named_parameters()), epochs=1, steps_per_epoch=1)
    zero_grad_step(layer, opt)
    np.testing.assert_allclose(layer.weight.numpy(), w0 * (1 - 0.5 * 0.2), rtol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), np.ones(2, np.float32))


def test_only_trainable_parameters_and_none_is_an_error():
    layer = paddle.nn.Linear(2, 2)
    layer.weight.stop_gradient = True
    opt, _ = build_optimizer(momentum_cfg({"learning_rate": 0.1}), layer.parameters(), 1, 1)
    assert [p.name for p in opt._parameter_list] == [layer.bias.name]
    layer.bias.stop_gradient = True
    with pytest.raises(ConfigError, match="no trainable parameter"):
        build_optimizer(momentum_cfg({"learning_rate": 0.1}), layer, 1, 1)


# ---------------------------------------------------------------- lr_mult_list
def test_lr_mult_list_is_honoured_with_no_decay_names():
    """lr_mult_list[0] -> ResNet stem, [i] -> blocks of stage i (ResNet18: 2 blocks per stage)."""
    from ppssld.arch.zoo import build_backbone

    paddle.seed(0)
    model = build_backbone("ResNet18", class_num=10, lr_mult_list=[0.0, 0.5, 1, 1, 1])
    lr, coeff = 0.1, 0.01
    opt, _ = build_optimizer(momentum_cfg({"learning_rate": lr}, regularizer={"name": "L2", "coeff": coeff},
                                          no_weight_decay_name="bn"), model, epochs=1, steps_per_epoch=1)
    images = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    paddle.nn.functional.cross_entropy(model(images), paddle.to_tensor([1, 2])).backward()
    named = {n: p for n, p in model.named_parameters() if not p.stop_gradient}
    before = {n: p.numpy().copy() for n, p in named.items()}
    grads = {n: p.grad.numpy().copy() for n, p in named.items()}
    opt.step()
    mult = {"stem": 0.0, "blocks.0.": 0.5, "blocks.1.": 0.5, "blocks.2.": 1.0, "fc": 1.0}
    checked = 0
    for name, param in named.items():
        prefix = next((k for k in mult if name.startswith(k)), None)
        if prefix is None:
            continue
        decay = 0.0 if "bn" in name else coeff
        expected = before[name] - lr * mult[prefix] * (grads[name] + decay * before[name])
        np.testing.assert_allclose(param.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=name)
        checked += 1
    assert checked > 20
    assert np.array_equal(named["stem.0.conv.weight"].numpy(), before["stem.0.conv.weight"])
    assert not np.array_equal(named["blocks.0.conv0.conv.weight"].numpy(), before["blocks.0.conv0.conv.weight"])


def test_lr_mult_list_applied_by_ppssld_scales_each_stage_update():
    """MobileNetV3 drops lr_mult_list; ppssld's per-stage multipliers reach the optimizer step."""
    from ppssld.arch.zoo import build_backbone

    paddle.seed(0)
    model = build_backbone("MobileNetV3_small_x0_35", class_num=10, lr_mult_list=[0.0, 0.25, 0.5, 0.75, 2.0])
    lr = 0.1
    opt, _ = build_optimizer({"name": "SGD", "lr": {"name": "Constant", "learning_rate": lr}}, model,
                             epochs=1, steps_per_epoch=1)
    model.train()
    images = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    paddle.nn.functional.cross_entropy(model(images), paddle.to_tensor([1, 2, 3, 4])).backward()
    named = dict(model.named_parameters())
    before = {n: p.numpy().copy() for n, p in named.items()}
    grads = {n: p.grad.numpy().copy() for n, p in named.items() if p.grad is not None}
    opt.step()
    mult = {"conv.": 0.0, "blocks.0.": 0.25, "blocks.2.": 0.5, "blocks.5.": 0.75, "blocks.9.": 2.0, "fc.": 1.0}
    checked = set()
    for name, grad in grads.items():
        prefix = next((k for k in mult if name.startswith(k)), None)
        if prefix is None:
            continue
        np.testing.assert_allclose(named[name].numpy(), before[name] - lr * mult[prefix] * grad, rtol=1e-5,
                                   atol=1e-7, err_msg=name)
        checked.add(prefix)
    assert checked == set(mult)


# ---------------------------------------------------------------- config errors
@pytest.mark.parametrize("cfg, pattern", [
    (momentum_cfg({"learning_rate": 0.1}, name="Momentun"), r"Did you mean 'Momentum'.*AdamW"),
    (momentum_cfg({"learning_rate": 0.1}, momentun=0.9), r"Did you mean 'momentum'"),
    (momentum_cfg({"name": "Cosin", "learning_rate": 0.1}), r"Did you mean 'Cosine'"),
    (momentum_cfg({"name": "Cosine", "learning_rate": 0.1, "warmup_epochs": 5}), r"Did you mean 'warmup_epoch'"),
    (momentum_cfg({"name": "Cosine"}), "learning_rate"),
    (momentum_cfg({"name": "Cosine", "learning_rate": 0.1, "warmup_epoch": 1, "warmup_steps": 3}), "either"),
    (momentum_cfg({"name": "Cosine", "learning_rate": 0.1, "epochs": 3}), "set by the engine"),
    (momentum_cfg({"name": "Piecewise", "decay_epochs": [3, 6], "values": [0.1, 0.01]}), "one more entry"),
    (momentum_cfg({"name": "Piecewise", "decay_epochs": [6, 3], "values": [0.1, 0.01, 0.001]}), "increasing"),
    (momentum_cfg({"learning_rate": 0.1}, regularizer={"name": "L3", "coeff": 1e-4}), r"Did you mean 'L(1|2)'"),
    (momentum_cfg({"learning_rate": 0.1}, regularizer={"name": "L2", "coef": 1e-4}), r"Did you mean 'coeff'"),
    (momentum_cfg({"learning_rate": 0.1}, regularizer={"name": "L2", "coeff": 1e-4}, weight_decay=1e-4), "either"),
    ({"name": "AdamW", "lr": {"learning_rate": 0.1}, "regularizer": {"name": "L2", "coeff": 1e-4}}, "weight_decay"),
    ({"name": "Momentum", "momentum": 0.9}, r"lr is missing"),
    ([{"Momentum": {"scope": "all"}}], "list of scoped"),
    ({"name": "AdamW", "lr": {"learning_rate": 0.1}, "clip_grad": 0}, "clip_grad must be a number > 0"),
    ({"name": "AdamW", "lr": {"learning_rate": 0.1}, "clip_grad": "5"}, "clip_grad must be a number > 0"),
    ({"name": "AdamW", "lr": {"learning_rate": 0.1}, "clip_grad": 1.0, "clip_norm": 1.0}, "not both"),
])
def test_config_errors(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_optimizer_config(cfg, "Optimizer")


def test_repo_configs_validate():
    from ppssld.loss import validate_loss_config
    from ppssld.metric import validate_metric_config

    from tests.conftest import shipped_configs

    paths = shipped_configs()
    assert len(paths) >= 6
    for path in paths:
        with open(path, "r", encoding="utf-8") as handle:
            cfg = yaml.safe_load(handle)
        validate_optimizer_config(cfg["Optimizer"], "Optimizer", epochs=cfg["Global"].get("epochs"))
        for mode, section in (cfg.get("Loss") or {}).items():
            validate_loss_config(section, f"Loss.{mode}")
        for mode, section in (cfg.get("Metric") or {}).items():
            validate_metric_config(section, f"Metric.{mode}")


def test_multistep_decay_and_step_each_epoch_ignored_as_paddleclas_overwrites_it(caplog):
    import logging

    from ppssld.optim.schedulers import build_lr_scheduler

    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.WARNING, logger="ppssld"):
        sched = build_lr_scheduler({"name": "MultiStepDecay", "learning_rate": 0.1, "milestones": [1],
                                    "step_each_epoch": 1, "gamma": 0.1}, epochs=2, steps_per_epoch=3)
    assert "step_each_epoch=1 is ignored" in caplog.text
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_lr() if hasattr(sched, "get_lr") else sched())
        sched.step()
    assert np.allclose(lrs, [0.1] * 3 + [0.01] * 3)  # the engine's 3 steps per epoch, not the YAML's 1
