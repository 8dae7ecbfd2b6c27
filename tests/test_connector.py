"""Feature connector (1x1 conv + BN) with DistanceLoss: numpy value, trained, checkpointed, resumed, not exported."""
import copy

import numpy as np
import paddle
import pytest

from conftest import distill_config, save_random_backbone
from ppssld.engine.builder import build_trainer
from ppssld.export.student import build_export_model
from ppssld.loss import build_loss
from ppssld.utils.errors import ConfigError

PAIR = {"weight": 1.0, "base_loss_name": "DistanceLoss", "mode": "l2", "model_name_pairs": [["Student", "Teacher"]],
        "s_key": "blocks[2]", "t_key": "blocks[2]", "name": "loss_feat",
        "connector": {"student_channels": 8, "teacher_channels": 128}}


def test_connector_then_l2_matches_numpy():
    loss = build_loss([{"DistillationPairLoss": PAIR}], "Loss.Train")
    rng = np.random.RandomState(0)
    s = rng.randn(3, 8, 4, 4).astype("float32")
    t = rng.randn(3, 128, 4, 4).astype("float32")
    got = loss({"Student": {"blocks[2]": paddle.to_tensor(s)}, "Teacher": {"blocks[2]": paddle.to_tensor(t)}})
    connector = loss.loss_func[0].connector
    w = connector.conv.weight.numpy()[:, :, 0, 0].astype(np.float64)  # [128, 8]
    y = np.einsum("oc,nchw->nohw", w, s.astype(np.float64))
    mean, var = y.mean(axis=(0, 2, 3), keepdims=True), y.var(axis=(0, 2, 3), keepdims=True)
    y = (y - mean) / np.sqrt(var + 1e-5)  # BN in training mode: batch statistics, weight 1, bias 0
    expected = ((y - t) ** 2).mean()
    np.testing.assert_allclose(float(got["loss_feat_0_Student_Teacher_loss_l2"]), expected, rtol=1e-4)
    np.testing.assert_allclose(float(got["loss"]), expected, rtol=1e-4)


@pytest.mark.parametrize("connector,message", [
    ({"student_channels": 8}, "connector must be a mapping"),
    ({"student_channels": 0, "teacher_channels": 4}, "connector.student_channels must be a positive integer"),
    ([8, 128], "connector must be a mapping"),
])
def test_bad_connector_names_the_entry(connector, message):
    with pytest.raises(ConfigError, match=r"Loss.Train\[0\].DistillationPairLoss: .*" + message):
        build_loss([{"DistillationPairLoss": dict(PAIR, connector=connector)}], "Loss.Train")


def _config(root, paths, teacher, out, epochs):
    cfg = distill_config(root, paths, teacher, out, epochs=epochs, with_unlabeled=False)
    cfg["Arch"]["models"][0]["Teacher"]["return_patterns"] = ["blocks[2]"]
    cfg["Arch"]["models"][1]["Student"]["return_patterns"] = ["blocks[2]"]
    cfg["Loss"]["Train"] = [{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}},
                            {"DistillationPairLoss": copy.deepcopy(PAIR)}]
    return cfg


def test_connector_trains_checkpoints_resumes_and_is_not_exported(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4)
    first = build_trainer(_config(root, paths, teacher, str(tmp_path / "run"), 2))
    keys = ["loss_func.1.connector.conv.weight", "loss_func.1.connector.bn.weight",
            "loss_func.1.connector.bn.bias", "loss_func.1.connector.bn._mean", "loss_func.1.connector.bn._variance"]
    init = {k: v.numpy().copy() for k, v in first.loss_fn.state_dict().items()}
    assert set(keys) <= set(init)
    # built after the model in the model's name scope: no loss parameter repeats a model parameter's
    # name (the optimizer keeps its moments by name; a repeat mixed them and diverged to NaN)
    model_names = {p.name for p in first.model.parameters()}
    assert not model_names & {p.name for p in first.loss_fn.parameters()}
    first.fit(stop_after_epoch=1)
    trained = {k: v.numpy().copy() for k, v in first.loss_fn.state_dict().items()}
    for key in keys[:3] + keys[4:]:  # trained parameters and the updated running variance
        assert not np.allclose(init[key], trained[key]), key
    # the student's blocks[2] ends in train-mode BatchNorm (plus a BN-normalised shortcut): its per-channel batch
    # mean is ~1e-7, so the connector's running mean stays ~0 whatever the seed (it is round-tripped below)
    assert np.abs(trained[keys[3]]).max() < 1e-4, trained[keys[3]]
    latest = tmp_path / "run" / "DistillationModel" / "latest"
    saved = paddle.load(str(latest) + ".pdparams")
    for key in keys:
        np.testing.assert_array_equal(saved[key].numpy(), trained[key])
    cfg = _config(root, paths, teacher, str(tmp_path / "run"), 2)
    cfg["Global"]["checkpoints"] = str(latest)
    resumed = build_trainer(cfg)
    for key in keys:
        np.testing.assert_array_equal(resumed.loss_fn.state_dict()[key].numpy(), trained[key])
    resumed.fit()
    layer, _, _ = build_export_model(copy.deepcopy(cfg), weights=str(latest))
    out = layer(paddle.zeros([1, 3, 32, 32]))
    assert isinstance(out, paddle.Tensor) and list(out.shape) == [1, 4]
    assert not any("connector" in k or k.startswith("loss_func") for k in layer.state_dict())
