"""Model zoo access, strict weight loading, DistillationModel freezing and key layout."""
import numpy as np
import paddle
import pytest

from ppssld.arch.build import build_model, infer_model_name
from ppssld.arch.distillation import BN_TYPES, DistillationModel
from ppssld.arch.weights import load_weights, strip_prefix
from ppssld.arch.zoo import build_backbone
from ppssld.utils.errors import ConfigError, WeightsError
from tests.conftest import save_random_backbone


def _arch(teacher_path, bn_mode="eval"):
    return {"name": "DistillationModel", "freeze_params_list": [True, False], "infer_model_name": "Student",
            "teacher_bn_mode": bn_mode,
            "models": [{"Teacher": {"name": "ResNet18", "class_num": 4, "pretrained": teacher_path}},
                       {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 4}}]}


def _snapshot(model, prefix):
    return {k: v.numpy().copy() for k, v in model.state_dict().items() if k.startswith(prefix)}


def test_unknown_backbone_and_bad_argument_are_named():
    with pytest.raises(ConfigError, match=r"unknown backbone 'ResNet19'.*Did you mean 'ResNet18'"):
        build_backbone("ResNet19", class_num=3)
    with pytest.raises(ConfigError, match="ResNet18.*no parameter 'colour'"):
        build_backbone("ResNet18", class_num=3, colour=1)


def test_pretrained_true_asks_for_a_local_path():
    with pytest.raises(ConfigError, match="download ResNet18_ssld_pretrained.*never downloads"):
        build_model({"name": "ResNet18", "class_num": 3, "pretrained": True, "use_ssld": True})


def test_frozen_model_without_weights_is_refused():
    arch = _arch(None)
    with pytest.raises(ConfigError, match=r"Arch.models\[0\].Teacher is frozen.*no pretrained weights"):
        build_model(arch)


def test_a_weights_path_not_on_disk_is_a_weights_error_naming_the_key(tmp_path):
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"))
    arch = _arch(teacher)
    arch["models"][1]["Student"]["pretrained"] = "path/to/stage1_best_model_student"  # PaddleClas's placeholder
    with pytest.raises(WeightsError, match=r"'path/to/stage1_best_model_student' \(Arch.models\[1\].Student"
                                           r".pretrained.*not found"):
        build_model(arch)


def test_strict_loading_lists_missing_unexpected_and_shape(tmp_path):
    model = build_backbone("MobileNetV3_small_x0_35", class_num=4)
    state = dict(model.state_dict())
    first = next(iter(state))
    state.pop(first)
    state["extra.weight"] = paddle.zeros([2])
    fc = [k for k in model.state_dict() if k.endswith("weight") and k != first][-1]
    state[fc] = paddle.zeros([3, 3])
    with pytest.raises(WeightsError) as info:
        load_weights(model, state, where="t.pdparams")
    text = str(info.value)
    assert f"missing {first}" in text and "unexpected extra.weight" in text and f"shape {fc}" in text
    problems = load_weights(model, state, strict=False)
    assert len(problems) == 3
    with pytest.raises(WeightsError, match="not found.*also tried"):
        load_weights(model, str(tmp_path / "nothing"))


def test_keys_are_prefixed_and_match_paddleclas_distillation_model(tmp_path):
    from paddleclas.ppcls.arch import DistillationModel as PaddleClasDistillationModel

    teacher = save_random_backbone(str(tmp_path / "t.pdparams"))
    ours = build_model(_arch(teacher[: -len(".pdparams")]))
    assert isinstance(ours, DistillationModel) and infer_model_name(_arch(teacher)) == "Student"
    keys = list(ours.state_dict())
    assert all(k.startswith(("Teacher.", "Student.")) for k in keys)
    theirs = PaddleClasDistillationModel(models=[{"Teacher": {"name": "ResNet18", "class_num": 4}},
                                                 {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 4}}],
                                         freeze_params_list=[True, False])
    assert sorted(theirs.state_dict()) == sorted(keys)
    load_weights(ours, theirs.state_dict())  # theirs -> ours, strict
    load_weights(theirs, ours.state_dict())  # ours -> theirs, strict
    x = paddle.rand([2, 3, 32, 32])
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(x)["Student"].numpy(), theirs(x)["Student"].numpy(), rtol=1e-5, atol=1e-6)
    student = strip_prefix(ours.state_dict(), "Student")
    load_weights(build_backbone("MobileNetV3_small_x0_35", class_num=4), student)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_teacher_is_frozen_bit_identical_and_student_learns(tmp_path, bn_mode):
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"))
    model = build_model(_arch(teacher, bn_mode))
    model.train()
    assert not model.Teacher.training and model.Student.training
    teacher_bns = [s for s in model.Teacher.sublayers() if isinstance(s, BN_TYPES)]
    assert teacher_bns and all(bn.training is (bn_mode == "train") for bn in teacher_bns)
    before_t, before_s = _snapshot(model, "Teacher."), _snapshot(model, "Student.")
    assert any("_mean" in k for k in before_t)
    params = [p for p in model.parameters() if not p.stop_gradient]
    assert len(params) == len([p for p in model.Student.parameters() if not p.stop_gradient])
    opt = paddle.optimizer.Momentum(0.1, parameters=params)
    for _ in range(3):
        out = model(paddle.rand([4, 3, 32, 32]) * 3)
        assert out["Teacher"].stop_gradient
        loss = paddle.nn.functional.mse_loss(out["Student"], out["Teacher"])
        loss.backward()
        opt.step()
        opt.clear_grad()
    after_t, after_s = _snapshot(model, "Teacher."), _snapshot(model, "Student.")
    for key in before_t:
        assert np.array_equal(before_t[key], after_t[key]), key
    assert any(not np.array_equal(before_s[k], after_s[k]) for k in before_s)


def test_bn_modes_differ_train_uses_batch_statistics(tmp_path):
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"))
    x = paddle.rand([4, 3, 32, 32]) * 5 + 2
    outs = {}
    for mode in ("eval", "train"):
        model = build_model(_arch(teacher, mode))
        model.train()
        outs[mode] = model(x)["Teacher"].numpy()
        model.eval()
        outs[mode + "_evalmode"] = model(x)["Teacher"].numpy()
    assert not np.allclose(outs["eval"], outs["train"])
    np.testing.assert_allclose(outs["eval"], outs["eval_evalmode"], rtol=1e-6)
    np.testing.assert_allclose(outs["eval"], outs["train_evalmode"], rtol=1e-6)


def test_teacher_bn_train_mode_switches_only_batchnorm(tmp_path):
    """teacher_bn_mode: train gives BatchNorm batch statistics, but Dropout stays off: the same batch twice
    gives the same teacher output, each BN layer's output is the manual batch-statistics formula, and the
    running statistics stay bit-identical."""
    teacher = str(tmp_path / "t.pdparams")
    paddle.seed(3)
    paddle.save(build_backbone("MobileNetV3_small_x0_35", class_num=4, dropout_prob=0.5).state_dict(), teacher)
    arch = _arch(teacher, "train")
    arch["models"][0] = {"Teacher": {"name": "MobileNetV3_small_x0_35", "class_num": 4, "dropout_prob": 0.5,
                                     "pretrained": teacher}}
    model = build_model(arch)
    model.train()
    dropouts = [s for s in model.Teacher.sublayers() if isinstance(s, paddle.nn.Dropout)]
    assert dropouts and not any(d.training for d in dropouts)
    before = _snapshot(model, "Teacher.")
    bn = next(s for s in model.Teacher.sublayers() if isinstance(s, BN_TYPES))
    seen = {}
    bn.register_forward_post_hook(lambda layer, inputs, output: seen.update(x=inputs[0].numpy(), y=output.numpy()))
    x = paddle.rand([4, 3, 32, 32]) * 3
    first, second = model(x)["Teacher"].numpy(), model(x)["Teacher"].numpy()
    assert np.array_equal(first, second)  # Dropout(0.5) in train mode would make these differ
    mean, var = seen["x"].mean(axis=(0, 2, 3)), seen["x"].var(axis=(0, 2, 3))
    expected = ((seen["x"] - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + bn._epsilon)
                * bn.weight.numpy()[None, :, None, None] + bn.bias.numpy()[None, :, None, None])
    np.testing.assert_allclose(seen["y"], expected, rtol=1e-4, atol=1e-4)
    running = ((seen["x"] - bn._mean.numpy()[None, :, None, None])
               / np.sqrt(bn._variance.numpy()[None, :, None, None] + bn._epsilon))
    assert not np.allclose(seen["y"], running * bn.weight.numpy()[None, :, None, None]
                           + bn.bias.numpy()[None, :, None, None], atol=1e-3)  # not the running statistics
    after = _snapshot(model, "Teacher.")
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_only_builds_a_single_model_without_the_teacher(tmp_path):
    arch = _arch(str(tmp_path / "missing_teacher.pdparams"))
    student = build_model(arch, only="Student")
    assert not isinstance(student, DistillationModel)
    with pytest.raises(ConfigError, match="Did you mean 'Student'"):
        build_model(arch, only="Studnt")


def test_train_only_freezes_everything_but_the_classifier():
    model = build_model({"name": "MobileNetV3_small_x0_35", "class_num": 4, "train_only": ["fc.*"]})
    trainable = [n for n, p in model.named_parameters() if not p.stop_gradient]
    assert trainable == ["fc.weight", "fc.bias"]
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = paddle.optimizer.Momentum(0.5, parameters=[p for p in model.parameters() if not p.stop_gradient])
    model.train()
    model(paddle.rand([2, 3, 32, 32])).mean().backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not np.array_equal(before[k], after[k].numpy())}
    assert {"fc.weight", "fc.bias"} <= changed
    assert all(k.startswith("fc.") or "_mean" in k or "_variance" in k for k in changed)  # BN stats adapt
    with pytest.raises(ConfigError, match="pattern 'head.*' matches no trainable parameter"):
        build_model({"name": "MobileNetV3_small_x0_35", "class_num": 4, "train_only": ["head.*"]})


def test_a_zoo_model_with_fixed_parameter_names_can_be_built_twice():
    first = build_backbone("ResNeXt50_32x4d", class_num=3)
    second = build_backbone("ResNeXt50_32x4d", class_num=3)
    assert list(first.state_dict()) == list(second.state_dict())
    load_weights(second, first.state_dict())


def test_lr_mult_list_is_applied_by_stage_where_the_backbone_drops_it():
    """ResNet applies lr_mult_list itself; MobileNetV3 swallows it, so ppssld applies it by the model's stages."""
    layer = build_backbone("ResNet18", class_num=3, lr_mult_list=[0.1, 0.2, 0.3, 0.4, 0.5])
    assert {round(float(p.optimize_attr["learning_rate"]), 3) for p in layer.parameters()} >= {0.1, 0.5}
    mv3 = build_backbone("MobileNetV3_small_x0_35", class_num=3, lr_mult_list=[0.1, 0.2, 0.3, 0.4, 0.5])
    expected = {"conv.": 0.1, "blocks.0.": 0.2, "blocks.1.": 0.3, "blocks.2.": 0.3, "blocks.3.": 0.4,
                "blocks.7.": 0.4, "blocks.8.": 0.5, "blocks.10.": 0.5, "last_second_conv.": 1.0, "last_conv.": 1.0,
                "fc.": 1.0}
    seen = set()
    for name, param in mv3.named_parameters():
        prefix = next((k for k in expected if name.startswith(k)), None)
        if prefix:
            assert float(param.optimize_attr["learning_rate"]) == pytest.approx(expected[prefix]), name
            seen.add(prefix)
    assert seen == set(expected)


@pytest.mark.parametrize("name, mults, pattern", [
    ("MobileNetV3_small_x0_35", [0.1, 0.2, 0.3], r"has 3 values; MobileNetV3_small_x0_35 needs 5"),
    ("MobileNetV3_large_x1_0", [0.1, 0.2, 0.3, 0.4, 0.5], r"needs 6"),
    ("PPHGNet_tiny", [0.1, 0.2, 0.3, 0.4, 0.5], r"PPHGNet_tiny.*ignores lr_mult_list.*declares no stages"),
])
def test_lr_mult_list_that_cannot_be_applied_is_refused(name, mults, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_backbone(name, class_num=3, lr_mult_list=mults)


def test_pretrained_list_loads_each_model_and_conflicts_are_refused(tmp_path):
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"), seed=3)
    arch = _arch(None)
    arch["pretrained_list"] = [teacher, None]
    model = build_model(arch)
    saved = paddle.load(teacher)
    for key, value in model.Teacher.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), saved[key].numpy())
    arch["models"][0]["Teacher"]["pretrained"] = str(tmp_path / "other.pdparams")
    with pytest.raises(ConfigError, match=r"pretrained and Arch.pretrained_list\[0\] disagree"):
        build_model(arch)
    arch["pretrained_list"] = [teacher]
    with pytest.raises(ConfigError, match="one entry per model"):
        build_model(arch)


def test_every_build_gets_the_parameter_names_of_a_fresh_paddleclas_process():
    first = build_model({"name": "MobileNetV3_small_x0_35", "class_num": 3})
    second = build_model({"name": "MobileNetV3_small_x0_35", "class_num": 3})
    assert [p.name for p in first.parameters()] == [p.name for p in second.parameters()]
    assert first.parameters()[0].name == "conv2d_0.w_0"
    distill = build_model({"name": "DistillationModel", "models": [
        {"Teacher": {"name": "MobileNetV3_small_x0_35", "class_num": 3}},
        {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 3}}]})
    teacher, student = distill.Teacher.parameters(), distill.Student.parameters()
    assert teacher[0].name == "conv2d_0.w_0"  # the teacher first, the student's counters continue
    teacher_convs = {p.name.split(".")[0] for p in teacher if p.name.startswith("conv2d_")}
    assert student[0].name == f"conv2d_{len(teacher_convs)}.w_0"


def test_two_fixed_name_backbones_in_one_distillation_model_get_unique_names(tmp_path):
    """ShuffleNetV2 names its parameters itself (stage1_conv_weights); Paddle refuses a name twice."""
    from ppssld.engine.checkpoint import Checkpointer

    arch = {"name": "DistillationModel", "models": [
        {"Teacher": {"name": "ShuffleNetV2_x0_25", "class_num": 3}},
        {"Student": {"name": "ShuffleNetV2_x0_25", "class_num": 3}}]}
    model = build_model(arch)
    names = [p.name for p in model.parameters()]
    assert len(set(names)) == len(names)
    assert model.Teacher.parameters()[0].name == "stage1_conv_weights"
    assert model.Student.parameters()[0].name == "Student.stage1_conv_weights"
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    out = model(paddle.rand([2, 3, 32, 32]))
    (out["Teacher"].mean() + out["Student"].mean()).backward()
    opt.step()
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    assert len(opt._accumulators["velocity"]) == len(trainable)  # one velocity each, none shared
    Checkpointer(str(tmp_path)).save("latest", model, opt, {"epoch": 1})
    again = build_model(arch)
    opt2 = paddle.optimizer.Momentum(0.1, parameters=again.parameters())
    Checkpointer.load(str(tmp_path / "latest"), again, opt2)
    out = again(paddle.rand([2, 3, 32, 32]))
    (out["Teacher"].mean() + out["Student"].mean()).backward()
    opt2.step()  # would assert "Optimizer set error" if a restored key were missing
    assert len(opt2._accumulators["velocity"]) == len(trainable)


@pytest.mark.parametrize("name", ["DLA34", "RedNet26", "HarDNet39_ds"])
def test_backbones_whose_factory_lacks_use_ssld_build_with_class_num(name):
    # PaddleClas's DLA/RedNet/HarDNet factories forward **kwargs to a class without use_ssld
    model = build_backbone(name, class_num=7)
    model.eval()
    out = model(paddle.rand([1, 3, 64, 64]))
    assert list(out.shape) == [1, 7]
