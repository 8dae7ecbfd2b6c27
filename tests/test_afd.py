"""AFD: AttentionModel outputs, AFDLoss against numpy, trainable attention, backbone-only export."""
import copy

import numpy as np
import paddle
import pytest

from ppssld.arch.build import build_model
from ppssld.export.student import build_export_model
from ppssld.loss import build_loss
from ppssld.utils.errors import ConfigError

T_KEYS = ["blocks[1]", "blocks[3]"]
T_SHAPES = [[64, 8, 8], [128, 4, 4]]
S_KEYS = ["blocks[1]", "blocks[5]"]
S_SHAPES = [[64, 8, 8], [256, 2, 2]]


def afd_arch():
    return {"name": "DistillationModel", "infer_model_name": "Student", "models": [
        {"Teacher": {"name": "AttentionModel", "freeze_params_list": [True, False], "models": [
            {"ResNet18": {"name": "ResNet18", "class_num": 3, "return_patterns": T_KEYS}},
            {"LinearTransformTeacher": {"name": "LinearTransformTeacher", "qk_dim": 8, "keys": T_KEYS,
                                        "t_shapes": T_SHAPES}}]}},
        {"Student": {"name": "AttentionModel", "models": [
            {"ResNet18": {"name": "ResNet18", "class_num": 3, "return_patterns": S_KEYS}},
            {"LinearTransformStudent": {"name": "LinearTransformStudent", "qk_dim": 8, "keys": S_KEYS,
                                        "s_shapes": S_SHAPES, "t_shapes": T_SHAPES}}]}}]}


def afd_loss():
    return build_loss([{"AFDLoss": {"weight": 50.0, "model_name_pair": ["Student", "Teacher"],
                                    "student_keys": ["bilinear_key", "value"], "teacher_keys": ["query", "value"],
                                    "s_shapes": S_SHAPES, "t_shapes": T_SHAPES, "qk_dim": 8}}])


def np_afd(key, query, s_values, t_values, p_t, p_s, t_index):
    logit = (np.einsum("bstq,btq->bts", key, query) + p_t @ p_s.T) / np.sqrt(key.shape[-1])
    att = np.exp(logit - logit.max(2, keepdims=True))
    att /= att.sum(2, keepdims=True)
    total = 0.0
    for i, n in enumerate(t_index):
        diff = ((s_values[n] - t_values[i][:, None]) ** 2).mean(2)
        total += (diff * att[:, i]).sum(1).mean()
    return total


def test_afd_outputs_loss_gradients_and_backbone_only_export(tmp_path):
    paddle.seed(0)
    model = build_model(afd_arch())
    model.train()
    x = paddle.to_tensor(np.random.default_rng(0).normal(0, 1, (4, 3, 32, 32)).astype("float32"))
    out = model(x)
    assert {"logits", "blocks[1]", "query", "value"} <= set(out["Teacher"])
    assert {"logits", "bilinear_key", "value"} <= set(out["Student"])
    assert list(out["Student"]["bilinear_key"].shape) == [4, 2, 2, 8]
    loss = afd_loss()
    parts = loss(out)
    att = loss.loss_func[0].attention
    f = lambda t: t.numpy().astype(np.float64)  # noqa: E731
    ref = np_afd(f(out["Student"]["bilinear_key"]), f(out["Teacher"]["query"]),
                 [f(v) for v in out["Student"]["value"]], [f(v) for v in out["Teacher"]["value"]],
                 f(att.p_t), f(att.p_s), [0, 1])
    np.testing.assert_allclose(float(parts["loss_afd"]), 50.0 * ref, rtol=1e-5)
    parts["loss"].backward()
    assert att.p_t.grad is not None and float(att.p_t.grad.abs().sum()) > 0
    assert model.Teacher.LinearTransformTeacher.query_layer[0].linear.weight.grad is not None
    assert all(p.grad is None for p in model.Teacher.ResNet18.parameters())  # frozen backbone
    ckpt = str(tmp_path / "afd.pdparams")
    paddle.save(model.state_dict(), ckpt)
    layer, target, _ = build_export_model({"Arch": afd_arch()}, weights=ckpt)
    assert target.prefix == "Student.ResNet18" and target.backbone == "ResNet18"
    model.eval()
    got = layer(x)
    assert isinstance(got, paddle.Tensor)
    np.testing.assert_allclose(got.numpy(), model.Student.ResNet18(x)["logits"].numpy(), rtol=1e-5, atol=1e-6)


def test_afd_config_errors():
    arch = copy.deepcopy(afd_arch())
    arch["models"][1]["Student"]["models"][1]["LinearTransformStudent"]["keys"] = ["blocks[1]"]
    with pytest.raises(ConfigError, match=r"keys must list 2 output keys"):
        build_model(arch)
    with pytest.raises(ConfigError, match="needs s_shapes and t_shapes"):
        build_loss([{"AFDLoss": {"qk_dim": 8}}])
    with pytest.raises(ConfigError, match="has no output \\['bilinear_key'\\]"):
        afd_loss()({"Student": {"value": []}, "Teacher": {"query": 0, "value": []}})
