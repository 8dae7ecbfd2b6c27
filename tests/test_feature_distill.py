"""Feature distillation: return_patterns, MGD / PEFD against numpy, trainable loss parameters end to end."""
import copy

import numpy as np
import paddle
import pytest

from conftest import distill_config, save_random_backbone
from ppssld.arch.build import build_model
from ppssld.arch.zoo import build_backbone
from ppssld.engine.builder import build_trainer
from ppssld.engine.checkpoint import Checkpointer
from ppssld.export.student import build_export_model
from ppssld.loss import build_loss
from ppssld.utils.errors import ConfigError, WeightsError

RNG = np.random.default_rng(5)


def test_return_patterns_give_paddleclas_keys_and_the_same_logits():
    paddle.seed(1)
    plain = build_backbone("ResNet18", class_num=3)
    feats = build_backbone("ResNet18", class_num=3, return_patterns=["blocks[1]", "blocks[7]", "avg_pool"])
    feats.set_state_dict(plain.state_dict())
    plain.eval(), feats.eval()
    x = paddle.to_tensor(RNG.normal(0, 1, (2, 3, 32, 32)).astype("float32"))
    out = feats(x)
    assert sorted(out) == ["avg_pool", "blocks[1]", "blocks[7]", "logits"]
    assert list(out["blocks[1]"].shape) == [2, 64, 8, 8] and list(out["avg_pool"].shape) == [2, 512, 1, 1]
    np.testing.assert_allclose(out["logits"].numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-6)
    again = feats(x)  # outputs are collected afresh on every call
    assert sorted(again) == sorted(out)


@pytest.mark.parametrize("patterns,message", [
    (["blocks[99]"], r"\['blocks\[99\]'\] name no sublayer of ResNet18; its top-level sublayers are"),
    (["nope"], "name no sublayer"),
    (["logits"], "'logits' is the classifier output's own key"),
    ([], "must be a list of sublayer paths"),
])
def test_bad_return_patterns_name_the_key(patterns, message):
    with pytest.raises(ConfigError, match=message):
        build_backbone("ResNet18", class_num=3, return_patterns=patterns, where="Arch.models[0].Teacher")


def np_conv(x, w, b):
    """'same' 2-D convolution (stride 1) in float64: x [N,C,H,W], w [O,C,k,k]."""
    k = w.shape[-1]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, wd = x.shape
    out = np.zeros((n, w.shape[0], h, wd))
    for i in range(h):
        for j in range(wd):
            out[:, :, i, j] = np.einsum("ncij,ocij->no", xp[:, :, i:i + k, j:j + k], w)
    return out + b[None, :, None, None]


def test_mgd_matches_numpy_with_paddleclas_channel_mask():
    loss = build_loss([{"DistillationPairLoss": {"base_loss_name": "MGDLoss", "s_key": "f", "t_key": "g",
                                                 "name": "loss_mgd", "student_channels": 3,
                                                 "teacher_channels": 4, "lambda_mgd": 0.5}}])
    mgd = loss.loss_func[0].loss_func
    s = RNG.normal(0, 1, (5, 3, 4, 4)).astype("float32")
    t = RNG.normal(0, 1, (5, 4, 4, 4)).astype("float32")
    outputs = {"Student": {"logits": paddle.zeros([5, 2]), "f": paddle.to_tensor(s)},
               "Teacher": {"logits": paddle.zeros([5, 2]), "g": paddle.to_tensor(t)}}
    paddle.seed(11)
    keep = (paddle.rand([5, 4, 1, 1]).numpy() >= 0.5).astype(np.float64)
    paddle.seed(11)
    got = float(loss(outputs)["loss_mgd_0_Student_Teacher"])
    p = {k: v.numpy().astype(np.float64) for k, v in mgd.state_dict().items()}
    aligned = np_conv(s.astype(np.float64), p["align.weight"], p["align.bias"])
    hidden = np.maximum(np_conv(aligned * keep, p["generation.0.weight"], p["generation.0.bias"]), 0)
    generated = np_conv(hidden, p["generation.2.weight"], p["generation.2.bias"])
    assert 0 < keep.mean() < 1
    np.testing.assert_allclose(got, 1.756 * np.mean((generated - t) ** 2), rtol=1e-5)


def test_pefd_matches_numpy():
    loss = build_loss([{"DistillationPairLoss": {"base_loss_name": "PEFDLoss", "s_key": "avg_pool",
                                                 "t_key": "avg_pool", "student_channel": 6,
                                                 "teacher_channel": 5, "num_projectors": 2}}])
    pefd = loss.loss_func[0].loss_func
    s = RNG.normal(0, 1, (4, 6, 1, 1)).astype("float32")
    t = RNG.normal(0, 1, (4, 5, 1, 1)).astype("float32")
    outputs = {"Student": {"avg_pool": paddle.to_tensor(s)}, "Teacher": {"avg_pool": paddle.to_tensor(t)}}
    got = float(loss(outputs)["loss_0_Student_Teacher"])
    p = {k: v.numpy().astype(np.float64) for k, v in pefd.state_dict().items()}
    fs, ft = s.reshape(4, -1), t.reshape(4, -1)
    proj = np.mean([np.maximum(fs @ p[f"projectors.{i}.weight"] + p[f"projectors.{i}.bias"], 0) for i in (0, 1)], 0)
    cos = (proj * ft).sum(1) / np.linalg.norm(proj, axis=1) / np.linalg.norm(ft, axis=1)
    np.testing.assert_allclose(got, np.mean(1 - cos), rtol=1e-5)


@pytest.mark.parametrize("params,message", [
    ({"base_loss_name": "MGD", "student_channels": 4, "teacher_channels": 4}, "Did you mean 'MGDLoss'"),
    ({"base_loss_name": "MGDLoss", "student_channel": 4, "teacher_channels": 4}, "Did you mean 'student_channels'"),
    ({"base_loss_name": "PEFDLoss", "student_channel": 4, "teacher_channel": 4, "mode": "max"}, "'flatten' or 'gap'"),
    ({"base_loss_name": "MGDLoss", "student_channels": 4, "teacher_channels": 4, "s_key": ["a"]}, "s_key must be"),
])
def test_pair_loss_config_errors_name_the_entry(params, message):
    with pytest.raises(ConfigError, match=r"Loss.Train\[0\].DistillationPairLoss: .*" + message):
        build_loss([{"DistillationPairLoss": params}])


def mgd_config(root, paths, teacher, out, epochs):
    cfg = distill_config(root, paths, teacher, out, epochs=epochs)
    cfg["Arch"]["models"][0]["Teacher"]["return_patterns"] = ["blocks[5]"]
    cfg["Arch"]["models"][1] = {"Student": {"name": "ResNet18", "class_num": 4, "return_patterns": ["blocks[5]"]}}
    cfg["Loss"]["Train"] = [
        {"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}},
        {"DistillationPairLoss": {"weight": 1.0, "base_loss_name": "MGDLoss", "model_name_pairs": [["Student", "Teacher"]],
                                  "s_key": "blocks[5]", "t_key": "blocks[5]", "name": "loss_mgd",
                                  "student_channels": 256, "teacher_channels": 256}}]
    return cfg


def _state(trainer):
    state = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items() if k.startswith("Student.")}
    state.update({k: v.numpy().copy() for k, v in trainer.loss_fn.state_dict().items()})
    return state


def test_mgd_trains_saves_resumes_exactly_and_exports_logits_only(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4)
    straight = build_trainer(mgd_config(root, paths, teacher, str(tmp_path / "a"), 2))
    init = {k: v.numpy().copy() for k, v in straight.loss_fn.state_dict().items()}
    assert "loss_func.1.loss_func.generation.0.weight" in init
    straight.fit()
    trained = straight.loss_fn.state_dict()
    assert all(not np.allclose(init[k], trained[k].numpy()) for k in init if k.endswith("weight"))
    first = build_trainer(mgd_config(root, paths, teacher, str(tmp_path / "b"), 2))
    first.fit(stop_after_epoch=1)
    saved = paddle.load(str(tmp_path / "b" / "DistillationModel" / "latest.pdparams"))
    assert "loss_func.1.loss_func.generation.2.bias" in saved and "Student.fc.weight" in saved
    cfg = mgd_config(root, paths, teacher, str(tmp_path / "b"), 2)
    cfg["Global"]["checkpoints"] = str(tmp_path / "b" / "DistillationModel" / "latest")
    resumed = build_trainer(cfg)
    resumed.fit()
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-5
    export_cfg = copy.deepcopy(cfg)
    layer, target, _ = build_export_model(export_cfg, weights=str(tmp_path / "b" / "DistillationModel" / "latest"))
    out = layer(paddle.zeros([1, 3, 32, 32]))
    assert isinstance(out, paddle.Tensor) and list(out.shape) == [1, 4]
    assert not any(k.startswith("loss_func") for k in layer.state_dict())
    model = build_model(cfg["Arch"])
    with pytest.raises(WeightsError, match="loss_func.1.loss_func"):  # a loss without those parameters
        Checkpointer.load(cfg["Global"]["checkpoints"], model, loss=build_loss(cfg["Loss"]["Train"][:1]))


def test_return_stages_alone_is_refused_and_beside_patterns_ignored():
    with pytest.raises(ConfigError, match="return_stages is not supported: name the outputs with return_patterns"):
        build_backbone("PPLCNet_x0_25", class_num=2, return_stages=True, where="Arch.models[0].Teacher")
    layer = build_backbone("PPLCNet_x0_25", class_num=2, return_stages=True, return_patterns=["blocks4"])
    layer.eval()
    assert sorted(layer(paddle.zeros([1, 3, 32, 32]))) == ["blocks4", "logits"]
