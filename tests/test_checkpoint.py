"""Checkpoints: PaddleClas layout, round trip, and a kill during a save loses nothing."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import paddle
import pytest

from ppssld.arch.build import build_model
from ppssld.arch.zoo import build_backbone
from ppssld.engine.checkpoint import Checkpointer, optimizer_state_for_save, restore_optimizer_state
from ppssld.utils.errors import WeightsError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model_and_opt(seed, fresh_scope=True):
    paddle.seed(seed)
    model = (build_model({"name": "MobileNetV3_small_x0_35", "class_num": 3}) if fresh_scope
             else build_backbone("MobileNetV3_small_x0_35", class_num=3))
    sched = paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=10)
    opt = paddle.optimizer.Momentum(sched, parameters=model.parameters())
    loss = model(paddle.rand([2, 3, 32, 32])).mean()
    loss.backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_round_trip_restores_model_optimizer_scheduler_and_rng(tmp_path):
    model, opt, sched = _model_and_opt(0)
    ckpt = Checkpointer(str(tmp_path))
    prefix = ckpt.save("latest", model, opt, {"epoch": 3, "step": 30, "metric": 0.5, "best_metric": 0.6})
    for ext in (".pdparams", ".pdopt", ".pdstates"):
        assert os.path.isfile(prefix + ext)
    expected_draw = paddle.rand([3]).numpy()
    other, opt2, sched2 = _model_and_opt(1)
    states = Checkpointer.load(str(tmp_path / "latest.pdparams"), other, opt2)
    assert states["epoch"] == 3 and states["best_metric"] == 0.6 and states["metric"] == 0.5
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), other.state_dict()[key].numpy())
    assert sched2.last_epoch == sched.last_epoch and opt2.get_lr() == pytest.approx(opt.get_lr())
    saved, restored = optimizer_state_for_save(opt, model), optimizer_state_for_save(opt2, other)
    velocities = [k for k in saved if k.endswith("_velocity_0")]
    # keyed as a fresh PaddleClas process keys them: generated parameter name + "_velocity_0"
    assert velocities == [p.name + "_velocity_0" for p in model.parameters() if not p.stop_gradient]
    assert velocities[0] == "conv2d_0.w_0_velocity_0"
    for key in velocities:
        np.testing.assert_array_equal(saved[key].numpy(), restored[key].numpy())
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected_draw)
    # PaddleClas layout: .pdparams is a plain key->tensor dict with exactly the model's keys
    raw = paddle.load(prefix + ".pdparams")
    assert set(raw) == set(model.state_dict())


def _velocity_by_structure(opt, model):
    return {n: opt._accumulators["velocity"][p.name].numpy() for n, p in model.named_parameters()
            if not p.stop_gradient}


def test_optimizer_state_loads_into_a_model_whose_names_are_offset(tmp_path):
    """Built in another name scope (counters offset, e.g. conv2d_54): matched by layer order, values intact."""
    model, opt, _ = _model_and_opt(0)
    Checkpointer(str(tmp_path)).save("latest", model, opt, {"epoch": 1})
    _model_and_opt(2, fresh_scope=False)  # shifts the process's name and accumulator counters
    other, opt2, _ = _model_and_opt(1, fresh_scope=False)
    assert other.parameters()[0].name != model.parameters()[0].name
    Checkpointer.load(str(tmp_path / "latest"), other, opt2)
    other(paddle.rand([2, 3, 32, 32])).mean().backward()
    before = _velocity_by_structure(opt, model)
    opt2._momentum = 0.5
    opt2.step()  # velocity = 0.5 * restored + grad: restored from the file, not zeros
    grads = {n: p.grad.numpy() for n, p in other.named_parameters() if not p.stop_gradient}
    after = _velocity_by_structure(opt2, other)
    for name in ("conv.conv.weight", "fc.weight"):
        np.testing.assert_allclose(after[name], 0.5 * before[name] + grads[name], rtol=1e-5, atol=1e-6)


def test_optimizer_state_of_another_model_is_refused_with_its_keys(tmp_path):
    model, opt, _ = _model_and_opt(0)
    Checkpointer(str(tmp_path)).save("latest", model, opt, {"epoch": 1})
    paddle.seed(0)
    resnet = build_model({"name": "ResNet18", "class_num": 3})
    resnet_opt = paddle.optimizer.Momentum(paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=10),
                                           parameters=resnet.parameters())
    state = paddle.load(str(tmp_path / "latest.pdopt"))[0]
    with pytest.raises(WeightsError, match=r"latest.pdopt does not fit .*(match no parameter|shape)"):
        restore_optimizer_state(resnet_opt, resnet, state, where=str(tmp_path / "latest.pdopt"))


def test_missing_or_mixed_files_are_refused(tmp_path):
    model, opt, _ = _model_and_opt(0)
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save("a", model, opt, {"epoch": 1})
    ckpt.save("b", model, opt, {"epoch": 2})
    os.replace(tmp_path / "b.pdstates", tmp_path / "a.pdstates")
    with pytest.raises(WeightsError, match="different saves"):
        Checkpointer.load(str(tmp_path / "a"), model, opt)
    other, opt2, _ = _model_and_opt(5)
    ckpt.save("c", other, opt2, {"epoch": 3})
    os.replace(tmp_path / "c.pdparams", tmp_path / "a.pdparams")
    with pytest.raises(WeightsError, match="digest differs"):
        Checkpointer.load(str(tmp_path / "a"), model)
    with pytest.raises(WeightsError, match=r"b.pdstates is missing"):
        Checkpointer.load(str(tmp_path / "b"), model, opt)


SLOW_SAVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import paddle
    from ppssld.arch.zoo import build_backbone
    from ppssld.engine.checkpoint import Checkpointer, optimizer_state_for_save
    paddle.seed(0)
    model = build_backbone("MobileNetV3_small_x0_35", class_num=3)
    ckpt = Checkpointer({out!r})
    ckpt.save("latest", model, None, {{"epoch": 1}})
    print("first-save-done", flush=True)
    real_save = paddle.save
    def slow_save(obj, path, *a, **k):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        print("writing", flush=True)
        time.sleep(60)
        real_save(obj, path, *a, **k)
    paddle.save = slow_save
    with paddle.no_grad():
        for p in model.parameters():
            p.set_value(p * 0 + 7)
    ckpt.save("latest", model, None, {{"epoch": 2}})
""")


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    out = str(tmp_path / "ckpt")
    script = tmp_path / "saver.py"
    script.write_text(SLOW_SAVER.format(root=ROOT, out=out))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("writing"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "first-save-done\n" in lines and lines[-1].startswith("writing"), lines
    paddle.seed(0)
    reference = build_backbone("MobileNetV3_small_x0_35", class_num=3)
    restored = build_backbone("MobileNetV3_small_x0_35", class_num=3)
    states = Checkpointer.load(os.path.join(out, "latest"), restored, None, restore_rng=False)
    assert states["epoch"] == 1
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), restored.state_dict()[key].numpy())


def test_stale_temporaries_of_one_tag_are_removed_and_nothing_else(tmp_path):
    """What a kill -9 inside a save of ``epoch_1`` leaves (``.<file>.<random>.tmp``) goes; other tags' files stay."""
    from ppssld.engine.checkpoint import remove_stale_temporaries

    names = [".epoch_1.pdparams.ab12cd.tmp", ".epoch_1.pdopt.x9.tmp", ".epoch_10.pdparams.ab12cd.tmp",
             "epoch_1.pdparams", ".latest.pdstates.q.tmp", ".epoch_1.pdparams.keep"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_temporaries(str(tmp_path), "epoch_1") == 2
    assert sorted(os.listdir(tmp_path)) == sorted(names[2:])
