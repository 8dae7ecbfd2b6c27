"""A student whose class count differs from the teacher's is refused before anything is built, when (and only
when) a configured loss compares the two models' logits class by class."""
import copy
import os
import subprocess
import sys

import pytest
import yaml

from ppssld.engine.builder import validate
from ppssld.utils.errors import ConfigError
from tests.conftest import ROOT, distill_config, save_random_backbone, write_images


def _config(tmp_path, student_classes=12, teacher_classes=10, loss=None):
    paths = write_images(str(tmp_path / "data"), 8, 4)
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"), class_num=teacher_classes)
    cfg = distill_config(str(tmp_path / "data"), paths, teacher, str(tmp_path / "out"))
    cfg["Arch"]["models"][0]["Teacher"]["class_num"] = teacher_classes
    if student_classes is None:
        cfg["Arch"]["models"][1]["Student"].pop("class_num")
    else:
        cfg["Arch"]["models"][1]["Student"]["class_num"] = student_classes
    if loss is not None:
        cfg["Loss"]["Train"] = loss
    return cfg


@pytest.mark.parametrize("loss", ["JSDivLoss", "DistillationDMLLoss", "KLDivLoss",
                                  "DistillationDKDLoss", "DistillationDISTLoss"])
def test_logit_losses_refuse_different_class_counts_naming_both(tmp_path, loss):
    cfg = _config(tmp_path, loss=[{loss: {"model_name_pairs": [["Student", "Teacher"]]}}])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert f"Loss.Train[0].{loss}" in text
    assert "Arch.models[1].Student (MobileNetV3_small_x0_35) predicts 12 classes" in text
    assert "Arch.models[0].Teacher (ResNet18) 10" in text
    assert "class_num: 10" in text  # what would be right


def test_a_missing_class_num_is_the_backbone_default(tmp_path):
    cfg = _config(tmp_path, student_classes=None)
    with pytest.raises(ConfigError, match=r"predicts 1000 classes \(no class_num: the MobileNetV3_small_x0_35 "
                                          r"default\) and Arch.models\[0\].Teacher \(ResNet18\) 10"):
        validate(cfg)


@pytest.mark.parametrize("loss", [
    # feature distillation: the compared outputs are features, not logits
    [{"DistillationPairLoss": {"base_loss_name": "DistanceLoss", "s_key": "avg_pool", "t_key": "avg_pool",
                               "model_name_pairs": [["Student", "Teacher"]]}}],
    # RKD compares relations inside each model's batch; a key other than the logits
    [{"DistillationRKDLoss": {"model_name_pairs": [["Student", "Teacher"]]}}],
    [{"DistillationDistanceLoss": {"key": "avg_pool", "model_name_pairs": [["Student", "Teacher"]]}}],
    # ground truth only
    [{"DistillationGTCELoss": {"model_names": ["Student"]}}],
])
def test_losses_that_do_not_compare_logits_accept_different_counts(tmp_path, loss):
    validate(_config(tmp_path, loss=loss))


def test_equal_counts_pass(tmp_path):
    validate(_config(tmp_path, student_classes=10))
    validate(copy.deepcopy(_config(tmp_path, student_classes=10, teacher_classes=10)))


@pytest.mark.timeout(240)
def test_train_tool_refuses_in_one_line_before_training(tmp_path):
    cfg = _config(tmp_path)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    env.pop("PPSSLD_DEBUG", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", str(path)],
                          capture_output=True, text=True, env=env, timeout=220)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "predicts 12 classes" in errors[0] and "10" in errors[0]
    assert not os.path.exists(tmp_path / "out" / "DistillationModel" / "latest.pdparams")
