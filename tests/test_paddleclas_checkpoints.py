"""PaddleClas's own checkpoints (tests/fixtures/paddleclas, written by its engine) resume and evaluate in
ppssld, and ppssld writes sets with exactly the structure PaddleClas's engine reads."""
import math
import os
import shutil

import numpy as np
import paddle
import pytest

from conftest import write_images
from ppssld.arch import zoo
from ppssld.utils.config import load_config
from ppssld.engine.builder import build_eval_model, build_eval_pieces, build_full_model, build_trainer
from ppssld.engine.evaluator import evaluate
from ppssld.utils.errors import ConfigError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "paddleclas")
DISTILL, PLAIN = "distill_dml_mv3", "plain_mv3"


def _config(tmp_path, stem, *extra):
    """The fixture's PaddleClas YAML on 24 fresh 32x32 images of 3 classes (as make_fixtures.py made them)."""
    data = str(tmp_path / "data")
    if not os.path.isdir(data):
        write_images(data, 24, 3)
    overrides = [f"Global.output_dir={tmp_path / 'out'}"]
    for mode in ("Train", "Eval"):
        overrides += [f"DataLoader.{mode}.dataset.image_root={data}/",
                      f"DataLoader.{mode}.dataset.cls_label_path={data}/train_list.txt"]
    return load_config(os.path.join(FIXTURES, stem + ".yaml"), overrides + list(extra))


def _fixture(stem, ext):
    return paddle.load(os.path.join(FIXTURES, stem, "epoch_1" + ext))


def test_paddleclas_distillation_set_resumes_and_continues(tmp_path):
    config = _config(tmp_path, DISTILL, f"Global.checkpoints={FIXTURES}/{DISTILL}/epoch_1")
    trainer = build_trainer(config)
    assert trainer.start_epoch == 2 and trainer.global_step == 3  # PaddleClas's .pdstates: epoch 1 only
    # LR: PaddleClas's Cosine (no warmup) over 2 epochs x 3 steps, at step 3
    assert trainer.optimizer.get_lr() == pytest.approx(0.1 * (1 + math.cos(math.pi * 3 / 6)) / 2)
    params = _fixture(DISTILL, ".pdparams")
    for key, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), params[key].numpy())
    # parameter names are PaddleClas's: the file's accumulator key is <our name>_velocity_0
    velocities = _fixture(DISTILL, ".pdopt")[0]
    student_w = trainer.model.Student.conv.conv.weight
    teacher_fc = trainer.model.Teacher.fc.weight
    stored = {p: velocities[p.name + "_velocity_0"].numpy() for p in (student_w, teacher_fc)}
    old = {p: p.numpy().copy() for p in stored}
    images, labels = next(iter(trainer.train_loader))
    _, parts = trainer._forward_loss(images, labels)
    parts["loss"].backward()
    grads = {p: p.grad.numpy().copy() for p in stored}
    trainer.optimizer.step()
    lr = trainer.optimizer.get_lr()
    for param, velocity in stored.items():  # Momentum 0.9 with L2 1e-5 added to the gradient
        expected_v = 0.9 * velocity + grads[param] + 1e-5 * old[param]
        np.testing.assert_allclose(param.numpy(), old[param] - lr * expected_v, rtol=1e-5, atol=1e-7)


def test_continuing_writes_the_set_paddleclas_reads(tmp_path):
    config = _config(tmp_path, PLAIN, f"Global.checkpoints={FIXTURES}/{PLAIN}/epoch_1")
    trainer = build_trainer(config)
    assert trainer.optimizer.get_lr() == pytest.approx(0.01)  # Piecewise: values[1] from epoch 1 on
    trainer.fit()
    out = str(tmp_path / "out" / "MobileNetV3_small_x0_35")
    assert set(os.listdir(out)) >= {"epoch_2.pdopt", "epoch_2.pdparams", "epoch_2.pdstates"}
    ours = {ext: paddle.load(os.path.join(out, "epoch_2" + ext)) for ext in (".pdparams", ".pdopt", ".pdstates")}
    theirs = {ext: _fixture(PLAIN, ext) for ext in (".pdparams", ".pdopt", ".pdstates")}
    for a, b in ((ours[".pdparams"], theirs[".pdparams"]), (ours[".pdopt"][0], theirs[".pdopt"][0])):
        assert list(a) == list(b)
        for key in b:
            if key != "LR_Scheduler":
                assert (a[key].shape, a[key].dtype) == (b[key].shape, b[key].dtype), key
    assert set(ours[".pdopt"][0]["LR_Scheduler"]) == set(theirs[".pdopt"][0]["LR_Scheduler"])
    assert ours[".pdopt"][0]["LR_Scheduler"]["last_epoch"] == 6
    assert isinstance(ours[".pdopt"], list) and ours[".pdstates"]["epoch"] == 2
    assert isinstance(ours[".pdstates"]["metric"], float)


def _student_only_top1(config, state):
    from ppssld.arch.build import build_model
    from ppssld.arch.distillation import DistillationModel
    from ppssld.arch.weights import load_weights, strip_prefix

    student = build_model(config["Arch"], only="Student", load_pretrained=False)
    load_weights(student, strip_prefix(state, "Student"))
    loader, metrics, _ = build_eval_pieces(config)
    return evaluate(DistillationModel({"Student": student}), loader, metrics)["top1"]


@pytest.mark.parametrize("which", ["paddleclas", "ppssld", "student_only"])
def test_eval_takes_whole_distillation_checkpoints_and_builds_only_the_student(tmp_path, which):
    """PaddleClas's documented eval command, with a ResNeXt101 frozen teacher nobody gave weights to."""
    if which == "paddleclas":
        weights = os.path.join(FIXTURES, DISTILL, "epoch_1")
    else:
        trainer = build_trainer(_config(tmp_path, DISTILL, "Global.epochs=1", "Global.eval_during_train=False"))
        trainer.fit()
        weights = str(tmp_path / "out" / "DistillationModel" / "epoch_1")
        if which == "student_only":
            student = {k[len("Student."):]: v for k, v in paddle.load(weights + ".pdparams").items()
                       if k.startswith("Student.")}
            weights = str(tmp_path / "best_model_student.pdparams")
            paddle.save(student, weights)
    config = _config(tmp_path, DISTILL, f"Global.pretrained_model={weights}",
                     "Arch.models.0.Teacher.name=ResNeXt101_32x8d_wsl", "Arch.freeze_params_list=[True, False]")
    assert config["Arch"]["models"][0]["Teacher"]["name"] == "ResNeXt101_32x8d_wsl"
    before = zoo._BUILDS["count"]
    model = build_eval_model(config)
    assert zoo._BUILDS["count"] - before == 1 and model.names == ["Student"]
    loader, metrics, loss = build_eval_pieces(config)
    top1 = evaluate(model, loader, metrics, loss)["top1"]
    state = paddle.load(weights if weights.endswith(".pdparams") else weights + ".pdparams")
    if which == "student_only":
        state = {"Student." + k: v for k, v in state.items()}
    assert top1 == pytest.approx(_student_only_top1(config, state))


def test_whole_model_weights_stand_in_for_a_frozen_teachers_pretrained(tmp_path):
    frozen = ("Arch.freeze_params_list=[True, False]",)
    with pytest.raises(ConfigError, match=r"Teacher is frozen .* no pretrained weights.*Global.pretrained_model"):
        build_full_model(_config(tmp_path, DISTILL, *frozen))
    weights = os.path.join(FIXTURES, DISTILL, "epoch_1")
    model = build_full_model(_config(tmp_path, DISTILL, *frozen, f"Global.pretrained_model={weights}"))
    np.testing.assert_array_equal(model.Teacher.fc.weight.numpy(),
                                  _fixture(DISTILL, ".pdparams")["Teacher.fc.weight"].numpy())
    # a student-only file provides no teacher: still refused
    student = {k[len("Student."):]: v for k, v in _fixture(DISTILL, ".pdparams").items() if k.startswith("Student.")}
    paddle.save(student, str(tmp_path / "student.pdparams"))
    with pytest.raises(ConfigError, match=r"Teacher is frozen"):
        build_full_model(_config(tmp_path, DISTILL, *frozen, f"Global.pretrained_model={tmp_path}/student"))
    # resuming from a full checkpoint also provides the teacher
    shutil.copytree(os.path.join(FIXTURES, DISTILL), tmp_path / "ckpt")
    trainer = build_trainer(_config(tmp_path, DISTILL, *frozen, f"Global.checkpoints={tmp_path}/ckpt/epoch_1"))
    assert trainer.start_epoch == 2 and trainer.model.frozen == ["Teacher"]


@pytest.mark.parametrize("warmup", [0, 1])
def test_lr_scheduler_state_moves_between_paddleclas_and_ppssld(warmup):
    """PaddleClas's Cosine is paddle's CosineAnnealingDecay(T_max=(epochs - warmup) * steps), inside a
    LinearWarmup(warmup * steps, 0 -> lr) when warmup is set (ppcls/optimizer/learning_rate.py); it reads
    our scheduler state and we read its."""
    from ppssld.optim import build_lr_scheduler

    def theirs():
        cosine = paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=(4 - warmup) * 5, eta_min=0.0)
        return paddle.optimizer.lr.LinearWarmup(cosine, warmup * 5, 0.0, 0.1) if warmup else cosine

    ours = build_lr_scheduler({"name": "Cosine", "learning_rate": 0.1, "warmup_epoch": warmup}, 4, 5, "lr")
    reference = theirs()
    for _ in range(7):
        ours.step()
        reference.step()
    assert ours() == pytest.approx(reference())
    loaded = theirs()
    loaded.set_state_dict(ours.state_dict())  # ppssld -> PaddleClas
    mine = build_lr_scheduler({"name": "Cosine", "learning_rate": 0.1, "warmup_epoch": warmup}, 4, 5, "lr")
    mine.set_state_dict(reference.state_dict())  # PaddleClas -> ppssld
    for _ in range(5):
        assert loaded() == pytest.approx(reference()) and mine() == pytest.approx(reference())
        loaded.step()
        mine.step()
        reference.step()
