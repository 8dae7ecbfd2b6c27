"""MultiStepDecay, Step, Linear, OneCycleLR, ReduceOnPlateau: PaddleClas's formulas, its Paddle
composition (LinearWarmup around the decay), by_epoch, and resume of their state."""
import math

import numpy as np
import paddle
import pytest

from ppssld.optim import build_lr_scheduler, build_optimizer
from ppssld.utils.errors import ConfigError

L = paddle.optimizer.lr


def values(sched, n):
    out = []
    for _ in range(n):
        out.append(sched())
        sched.step()
    return out


def warm(start, end, n):
    return [start + (end - start) * i / n for i in range(n)]


def test_multistep_closed_form_counts_milestones_after_warmup():
    sched = build_lr_scheduler({"name": "MultiStepDecay", "learning_rate": 0.1, "milestones": [1, 3],
                                "gamma": 0.5, "warmup_epoch": 1, "warmup_start_lr": 0.02}, 5, 4)
    got = values(sched, 20)
    body = [0.1 * 0.5 ** sum(u >= m * 4 for m in (1, 3)) for u in range(16)]
    np.testing.assert_allclose(got, warm(0.02, 0.1, 4) + body, rtol=1e-12)


def test_multistep_matches_paddleclas_composition():
    epochs, steps = 6, 5
    ref = L.LinearWarmup(L.MultiStepDecay(0.04, milestones=[2 * steps, 4 * steps], gamma=0.3),
                         warmup_steps=steps, start_lr=1e-3, end_lr=0.04)
    ours = build_lr_scheduler({"name": "MultiStepDecay", "learning_rate": 0.04, "milestones": [2, 4],
                               "gamma": 0.3, "warmup_epoch": 1, "warmup_start_lr": 1e-3, "verbose": False},
                              epochs, steps)
    np.testing.assert_allclose(values(ours, epochs * steps), values(ref, epochs * steps), rtol=1e-6)


def test_step_fractional_step_size_as_paddleclas():
    """TinyNet: step_size 2.4 epochs -> int(2.4 * steps) iterations; warmup 3 epochs from 1e-6."""
    epochs, steps = 10, 5
    ours = build_lr_scheduler({"name": "Step", "learning_rate": 0.048, "step_size": 2.4, "gamma": 0.97,
                               "warmup_epoch": 3, "warmup_start_lr": 1e-6}, epochs, steps)
    body = [0.048 * 0.97 ** (u // 12) for u in range(epochs * steps - 15)]
    np.testing.assert_allclose(values(ours, epochs * steps), warm(1e-6, 0.048, 15) + body, rtol=1e-12)
    ref = L.LinearWarmup(L.StepDecay(0.048, step_size=12, gamma=0.97), warmup_steps=15, start_lr=1e-6,
                         end_lr=0.048)
    ours = build_lr_scheduler({"name": "Step", "learning_rate": 0.048, "step_size": 2.4, "gamma": 0.97,
                               "warmup_epoch": 3, "warmup_start_lr": 1e-6}, epochs, steps)
    np.testing.assert_allclose(values(ours, epochs * steps), values(ref, epochs * steps), rtol=1e-6)


def test_step_by_epoch_changes_only_at_epoch_boundaries():
    sched = build_lr_scheduler({"name": "Step", "learning_rate": 1.0, "step_size": 2, "gamma": 0.1,
                                "by_epoch": True}, 5, 3)
    expected = [0.1 ** (e // 2) for e in range(5) for _ in range(3)]
    np.testing.assert_allclose(values(sched, 15), expected, rtol=1e-12)


@pytest.mark.parametrize("power,cycle", [(1.0, False), (2.0, False), (1.0, True)])
def test_linear_polynomial_decay(power, cycle):
    epochs, steps = 4, 3
    sched = build_lr_scheduler({"name": "Linear", "learning_rate": 0.5, "end_lr": 0.01, "power": power,
                                "cycle": cycle, "warmup_epoch": 1}, epochs, steps)
    got = values(sched, epochs * steps)
    decay = (epochs - 1) * steps
    body = []
    for u in range(decay):
        d = decay * max(1, math.ceil(u / decay)) if cycle else decay
        body.append((0.5 - 0.01) * (1 - min(u, d) / d) ** power + 0.01)
    np.testing.assert_allclose(got, warm(0.0, 0.5, steps) + body, rtol=1e-12)
    ref = L.LinearWarmup(L.PolynomialDecay(0.5, decay_steps=decay, end_lr=0.01, power=power, cycle=cycle),
                         warmup_steps=steps, start_lr=0.0, end_lr=0.5)
    np.testing.assert_allclose(got, values(ref, epochs * steps), rtol=1e-6)


@pytest.mark.parametrize("three_phase,strategy", [(False, "cos"), (True, "linear"), (False, "linear")])
def test_onecycle_matches_paddle(three_phase, strategy):
    epochs, steps = 4, 5
    cfg = {"name": "OneCycleLR", "max_learning_rate": 1e-3, "divide_factor": 25.0, "end_learning_rate": 1e-8,
           "phase_pct": 0.2, "anneal_strategy": strategy, "three_phase": three_phase}
    ours = build_lr_scheduler(cfg, epochs, steps)
    ref = L.OneCycleLR(max_learning_rate=1e-3, total_steps=epochs * steps, divide_factor=25.0,
                       end_learning_rate=1e-8, phase_pct=0.2, anneal_strategy=strategy, three_phase=three_phase)
    got = values(ours, epochs * steps)
    np.testing.assert_allclose(got, values(ref, epochs * steps), rtol=1e-6)
    assert got[0] == pytest.approx(1e-3 / 25) and max(got) == pytest.approx(1e-3, rel=1e-6)
    alias = build_lr_scheduler(dict(cfg, name="OneCycle"), epochs, steps)
    np.testing.assert_allclose(values(alias, epochs * steps), got)


def plateau_reference(lr, metrics, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps):
    """Paddle's ReduceOnPlateau rule, written out in plain Python."""
    best, bad, cool, out = None, 0, 0, []
    for m in metrics:
        if cool > 0:
            cool -= 1
        else:
            margin = best * threshold if (best is not None and threshold_mode == "rel") else threshold
            better = best is None or (m < best - margin if mode == "min" else m > best + margin)
            best, bad = (m, 0) if better else (best, bad + 1)
            if bad > patience:
                cool, bad = cooldown, 0
                new = max(lr * factor, min_lr)
                if lr - new > eps:
                    lr = new
        out.append(lr)
    return out


def test_reduce_on_plateau_rule_and_paddle_reference():
    cfg = {"name": "ReduceOnPlateau", "learning_rate": 1e-4, "mode": "max", "factor": 0.1, "patience": 1,
           "threshold": 1e-3, "threshold_mode": "rel", "cooldown": 1, "min_lr": 5e-7}
    metrics = [0.5, 0.6, 0.6, 0.6, 0.6, 0.61, 0.62, 0.62, 0.62, 0.62, 0.62, 0.62, 0.62]
    ours = build_lr_scheduler(cfg, 20, 2)
    ref = L.ReduceOnPlateau(1e-4, mode="max", factor=0.1, patience=1, threshold=1e-3, threshold_mode="rel",
                            cooldown=1, min_lr=5e-7)
    got, paddle_vals = [], []
    for m in metrics:
        ours.step()
        ours.step()  # two optimizer steps per epoch: no effect on the plateau value
        ours.observe(m)
        got.append(ours())
        ref.step(m)
        paddle_vals.append(ref.last_lr)
    expected = plateau_reference(1e-4, metrics, "max", 0.1, 1, 1e-3, "rel", 1, 5e-7, 1e-8)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(got, paddle_vals, rtol=1e-12)
    assert got[-1] == pytest.approx(5e-7)  # floored at min_lr


def test_reduce_on_plateau_warmup_then_plateau_value():
    sched = build_lr_scheduler({"name": "ReduceOnPlateau", "learning_rate": 0.2, "warmup_epoch": 1,
                                "patience": 0}, 4, 2)
    assert values(sched, 2) == pytest.approx([0.0, 0.1])
    assert sched() == pytest.approx(0.2)
    sched.observe(1.0)
    sched.observe(1.0)  # no improvement in min mode, patience 0
    assert sched() == pytest.approx(0.02)


def test_state_survives_optimizer_checkpoint_round_trip():
    """ReduceOnPlateau's plateau state and every counter travel in the optimizer's state dict."""
    layer = paddle.nn.Linear(2, 2)
    cfg = {"name": "Momentum", "momentum": 0.9,
           "lr": {"name": "ReduceOnPlateau", "learning_rate": 0.1, "patience": 0, "cooldown": 2}}
    opt, sched = build_optimizer(cfg, layer, epochs=5, steps_per_epoch=3)
    for m in (1.0, 2.0, 0.5, 3.0):
        sched.step()
        sched.observe(m)
    state = opt.state_dict()
    opt2, sched2 = build_optimizer(cfg, layer, epochs=5, steps_per_epoch=3)
    opt2.set_state_dict(state)
    for name in ("last_epoch", "plateau_lr", "best", "num_bad_epochs", "cooldown_counter"):
        assert getattr(sched2, name) == getattr(sched, name), name
    assert sched2() == pytest.approx(sched())
    for m in (4.0, 4.0, 4.0, 4.0):
        sched.observe(m)
        sched2.observe(m)
        assert sched2() == sched()
    for name in ("MultiStepDecay", "Step", "Linear", "OneCycleLR"):
        lr = {"name": name, "learning_rate": 0.1, "milestones": [1], "step_size": 1, "gamma": 0.5,
              "max_learning_rate": 0.1}
        lr = {k: v for k, v in lr.items() if k in {
            "MultiStepDecay": ("name", "learning_rate", "milestones", "gamma"),
            "Step": ("name", "learning_rate", "step_size", "gamma"),
            "Linear": ("name", "learning_rate"), "OneCycleLR": ("name", "max_learning_rate")}[name]}
        opt, sched = build_optimizer({"name": "Momentum", "lr": lr}, layer, epochs=3, steps_per_epoch=4)
        for _ in range(5):
            sched.step()
        opt2, sched2 = build_optimizer({"name": "Momentum", "lr": lr}, layer, epochs=3, steps_per_epoch=4)
        opt2.set_state_dict(opt.state_dict())
        assert values(sched2, 7) == pytest.approx(values(sched, 7)), name


@pytest.mark.parametrize("cfg,match", [
    ({"name": "MultiStepDecay", "learning_rate": 0.1, "milestones": [3, 1]}, "increasing"),
    ({"name": "MultiStepDecay", "learning_rate": 0.1}, "milestones"),
    ({"name": "Step", "learning_rate": 0.1, "step_size": 0.01, "gamma": 0.1}, "step_size"),
    ({"name": "OneCycleLR", "max_learning_rate": 0.1, "anneal_strategy": "exp"}, "anneal_strategy"),
    ({"name": "ReduceOnPlateau", "learning_rate": 0.1, "mode": "best"}, "mode"),
    ({"name": "ReduceOnPlateau", "learning_rate": 0.1, "factor": 1.5}, "factor"),
    ({"name": "Linear", "learning_rate": 0.1, "end_lrr": 0.0}, "end_lr"),
])
def test_bad_values_name_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_lr_scheduler(cfg, 4, 3)
