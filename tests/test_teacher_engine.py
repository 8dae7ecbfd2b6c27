"""The frozen teacher in Paddle Inference: exact against dygraph, stored once and reused, wired into online
distillation, the cache and mining, and refused or skipped (with the reason) where it cannot serve."""
import copy
import logging
import os

import numpy as np
import paddle
import pytest

from ppssld.arch.zoo import build_backbone
from ppssld.engine.builder import build_trainer
from ppssld.teacher.frozen import teacher_from_config
from ppssld.teacher.choose import EngineTeacher
from ppssld.teacher.engines import LayerEngine, layer_key, softmax_gap, store_root
from ppssld.utils.errors import ConfigError
from tests.conftest import distill_config, save_random_backbone


def _layer(seed=0):
    paddle.seed(seed)
    layer = build_backbone("ResNet18", class_num=10)
    layer.eval()
    return layer


def test_engine_softmax_equals_dygraph_on_every_image_and_batch_size():
    layer = _layer()
    engine = LayerEngine(layer, "Teacher", threads=1)
    rng = np.random.default_rng(0)
    for n in (1, 7, 32):
        batch = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        with paddle.no_grad():
            reference = layer(paddle.to_tensor(batch)).numpy()
        out = engine(batch)
        assert out.shape == reference.shape and out.dtype == np.float32
        assert softmax_gap(out, reference) <= 1e-4 and np.abs(out - reference).max() < 1e-3
    assert len(engine.predictors) == 1  # one predictor per input shape, whatever the batch


def test_the_saved_teacher_is_reused_and_rebuilt_when_its_weights_change(caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("PPSSLD_CACHE_DIR", str(tmp_path / "store"))  # an empty store of its own
    layer = _layer(1)
    batch = np.zeros((2, 3, 32, 32), np.float32)
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.INFO, logger="ppssld"):
        LayerEngine(layer, "T", threads=1)(batch)
        LayerEngine(layer, "T", threads=1)(batch)
    # distinct lines: a record can reach caplog through two handlers when an earlier test left propagation on
    lines = list(dict.fromkeys(r.getMessage() for r in caplog.records if "runs in Paddle Inference" in r.getMessage()))
    assert len(lines) == 2 and " saved " in lines[0] and " reused " in lines[1], lines
    key = layer_key(layer, [3, 32, 32])
    assert os.path.isdir(os.path.join(store_root(), key))
    first = next(iter(layer.parameters()))
    first.set_value(first.numpy() + 1.0)
    assert layer_key(layer, [3, 32, 32]) != key and layer_key(layer, [3, 64, 64]) != key


@pytest.fixture
def setup(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4, seed=1)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=1)
    cfg["Global"]["eval_during_train"] = False
    return cfg


def _targets(trainer):
    seen = []
    trainer.model.Teacher.register_forward_post_hook(lambda _l, _i, out: seen.append(out.numpy().copy()))
    return seen


def test_online_distillation_runs_the_teacher_in_the_engine_with_dygraphs_targets(setup):
    auto = build_trainer(copy.deepcopy(setup))
    assert isinstance(auto.model.Teacher, EngineTeacher)
    dy_cfg = copy.deepcopy(setup)
    dy_cfg["Arch"]["teacher_engine"] = "dygraph"
    dy_cfg["Global"]["output_dir"] += "_dygraph"
    dygraph = build_trainer(dy_cfg)
    assert not isinstance(dygraph.model.Teacher, EngineTeacher)
    assert auto.model.state_dict().keys() == dygraph.model.state_dict().keys()  # checkpoint keys unchanged
    a, b = _targets(auto), _targets(dygraph)
    auto.fit()
    dygraph.fit()
    assert len(a) == len(b) == 4
    assert max(softmax_gap(x, y) for x, y in zip(a, b)) <= 1e-4
    assert all(p.stop_gradient for p in auto.model.Teacher.parameters())


def test_cache_and_mining_teacher_use_the_engine_and_agree_with_dygraph(setup):
    auto = teacher_from_config(setup)
    dy_cfg = copy.deepcopy(setup)
    dy_cfg["Arch"]["teacher_engine"] = "dygraph"
    dygraph = teacher_from_config(dy_cfg)
    assert auto.engine is not None and dygraph.engine is None
    assert "engine=paddle_inference" in auto.description and "engine=dygraph" in dygraph.description
    batch = np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32)
    assert np.abs(auto(batch)[0] - dygraph(batch)[0]).max() <= 1e-4
    assert np.abs(auto(batch, logits=True)[0] - dygraph(batch, logits=True)[0]).max() < 1e-3


def test_where_the_engine_cannot_serve_auto_says_why_and_paddle_inference_is_refused(setup, caplog):
    cfg = copy.deepcopy(setup)
    cfg["Arch"]["teacher_bn_mode"] = "train"
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.INFO, logger="ppssld"):
        trainer = build_trainer(copy.deepcopy(cfg))
    assert not isinstance(trainer.model.Teacher, EngineTeacher)
    assert "runs in dygraph (Arch.teacher_engine: auto): Arch.teacher_bn_mode: train" in caplog.text
    cfg["Arch"]["teacher_engine"] = "paddle_inference"
    with pytest.raises(ConfigError, match="paddle_inference cannot run teacher Teacher: Arch.teacher_bn_mode"):
        build_trainer(cfg)
    bad = copy.deepcopy(setup)
    bad["Arch"]["teacher_engine"] = "tensorrt"
    with pytest.raises(ConfigError, match="Arch.teacher_engine must be one of auto, dygraph, paddle_inference"):
        build_trainer(bad)


def test_onnxruntime_engine_equals_dygraph_and_is_recorded(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("paddle2onnx")
    layer = _layer(3)
    engine = LayerEngine(layer, "Teacher", threads=1, kind="onnxruntime")
    rng = np.random.default_rng(3)
    for n in (1, 5):
        batch = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        with paddle.no_grad():
            reference = layer(paddle.to_tensor(batch)).numpy()
        out = engine(batch)
        assert out.shape == reference.shape and softmax_gap(out, reference) <= 1e-4
    folder = os.path.join(store_root(), layer_key(layer, (3, 32, 32)))
    assert os.path.isfile(os.path.join(folder, "teacher.onnx"))  # converted once, beside the saved net
    from ppssld.teacher.choose import engine_for, engine_label
    assert engine_label(engine_for(layer, "Teacher", {}, "onnxruntime")) == "onnxruntime"
    assert engine_label(engine_for(layer, "Teacher", {}, "dygraph")) == "dygraph"
    with pytest.raises(ConfigError, match="onnxruntime cannot run teacher Teacher: it returns intermediate"):
        engine_for(layer, "Teacher", {"return_patterns": ["blocks[1]"]}, "onnxruntime")
    with pytest.raises(ConfigError, match="kind must be one of"):
        LayerEngine(layer, "Teacher", threads=1, kind="tensorrt")


def test_global_to_static_trains_the_student_to_dygraphs_weights(setup):
    from ppssld.engine.to_static import convert_trained_models

    dy = build_trainer(copy.deepcopy(setup))
    dy.fit()
    st_cfg = copy.deepcopy(setup)
    st_cfg["Global"]["to_static"] = True
    st_cfg["Global"]["output_dir"] += "_static"
    st = build_trainer(st_cfg)
    assert st.model.state_dict().keys() == dy.model.state_dict().keys()  # checkpoint keys unchanged
    st.fit()
    a, b = dy.model.Student.state_dict(), st.model.Student.state_dict()
    gap = max(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a)
    print("to_static vs dygraph student, largest weight difference:", gap)
    assert gap <= 1e-5, gap  # float noise at most
    bad = copy.deepcopy(setup)
    bad["Global"]["to_static"] = "yes"
    with pytest.raises(ConfigError, match="Global.to_static must be true or false"):
        convert_trained_models(dy.model, bad)
