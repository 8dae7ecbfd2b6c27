"""arch/roles.py: the one rule for the student's output and the infer model, used everywhere it is needed."""
import numpy as np
import paddle
import pytest

from ppssld.arch.build import infer_model_name
from ppssld.arch.distillation import DistillationModel
from ppssld.arch.roles import infer_model, student_output_name
from ppssld.loss.losses import CELoss
from ppssld.metric.multilabel import select_logits
from ppssld.metric.topk import TopkAcc
from ppssld.utils.errors import ConfigError


def test_student_output_name_order():
    assert student_output_name({"Teacher": 1, "logits": 2, "Student": 3}) == "logits"
    assert student_output_name({"Teacher": 1, "Student": 3}) == "Student"
    assert student_output_name({"only": 1}) == "only"
    assert student_output_name({"A": 1, "B": 2}) is None


def test_infer_model_rule_is_the_same_in_the_builder_and_in_the_model():
    assert infer_model(["Teacher", "Student"], [True, False]) == "Student"
    assert infer_model(["S1", "S2"], [False, False]) == "S2"
    assert infer_model(["T1", "T2"], [True, True]) == "T2"  # every model frozen: the last one (no IndexError)
    assert infer_model(["Teacher", "Student"], [True, False], "Teacher") == "Teacher"
    arch = {"name": "DistillationModel", "freeze_params_list": [True, True],
            "models": [{"T1": {"name": "ResNet18"}}, {"T2": {"name": "ResNet18"}}]}
    assert infer_model_name(arch) == "T2"
    layers = {"T1": paddle.nn.Linear(2, 2), "T2": paddle.nn.Linear(2, 2)}
    assert DistillationModel(layers, frozen=["T1", "T2"]).infer_model_name == "T2"


def test_losses_and_metrics_read_the_same_entry():
    rng = np.random.RandomState(0)
    student = paddle.to_tensor(rng.randn(4, 3).astype("float32"))
    teacher = paddle.to_tensor(rng.randn(4, 3).astype("float32"))
    labels = paddle.to_tensor(np.array([[0], [1], [2], [1]], dtype="int64"))
    outputs = {"Teacher": teacher, "Student": student}
    loss = CELoss()(outputs, labels)
    assert list(loss) == ["CELoss_Student"]
    np.testing.assert_allclose(float(loss["CELoss_Student"]), float(CELoss()(student, labels)["CELoss"]), rtol=1e-6)
    metric = TopkAcc(topk=[1])
    assert metric.select(outputs) is student
    np.testing.assert_array_equal(select_logits(outputs, "m"), student.numpy().astype(np.float64))
    with pytest.raises(ConfigError, match="several models"):
        metric.select({"A": student, "B": teacher})
    with pytest.raises(ConfigError, match="several models"):
        CELoss()({"A": student, "B": teacher}, labels)
