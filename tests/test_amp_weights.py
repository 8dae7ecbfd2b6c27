"""AMP O2: checkpoints hold float32 (PaddleClas's save_dtype), dtype mismatches are named, eval autocasts.

The CPU has no float16 kernels for training, so an O2 model is simulated by casting a model to float16
(what ``paddle.amp.decorate(level='O2')`` does to parameters on a GPU).
"""
import contextlib

import numpy as np
import paddle
import pytest

from ppssld.arch.build import build_model
from ppssld.arch.weights import load_weights
from ppssld.engine import evaluator
from ppssld.engine.checkpoint import Checkpointer
from ppssld.utils.errors import WeightsError

ARCH = {"name": "MobileNetV3_small_x0_35", "class_num": 3}


def _half_model(seed=0):
    paddle.seed(seed)
    model = build_model(ARCH)
    model.to(dtype="float16")
    assert {str(p.dtype) for p in model.parameters()} == {"paddle.float16"}
    return model


def test_o2_checkpoint_is_float32_and_loads_into_float32_and_o2_models(tmp_path):
    half = _half_model()
    prefix = Checkpointer(str(tmp_path)).save("latest", half, None, {"epoch": 1})
    saved = paddle.load(prefix + ".pdparams")
    assert {str(v.dtype) for v in saved.values()} == {"paddle.float32"}
    np.testing.assert_array_equal(saved["fc.weight"].numpy(), half.fc.weight.astype("float32").numpy())
    full = build_model(ARCH)
    Checkpointer.load(prefix, full)  # evaluation, fine-tuning and export use float32 models
    np.testing.assert_array_equal(full.fc.weight.numpy(), saved["fc.weight"].numpy())
    resumed = _half_model(seed=1)
    Checkpointer.load(prefix, resumed)  # resuming O2: float32 values cast back to the model's float16
    assert str(resumed.fc.weight.dtype) == "paddle.float16"
    np.testing.assert_array_equal(resumed.fc.weight.numpy(), half.fc.weight.numpy())


def test_half_precision_weights_into_a_float32_model_name_the_tensor(tmp_path):
    half = _half_model()
    paddle.save(half.state_dict(), str(tmp_path / "half.pdparams"))
    with pytest.raises(WeightsError, match=r"half.pdparams.*tensor conv.conv.weight is float16 in the file but "
                                           r"float32 in the model.*AMP O2"):
        load_weights(build_model(ARCH), str(tmp_path / "half.pdparams"), where=str(tmp_path / "half.pdparams"))
    state = {k: v.astype("int32") if k == "fc.bias" else v for k, v in build_model(ARCH).state_dict().items()}
    with pytest.raises(WeightsError, match=r"tensor fc.bias is int32 in the file but float32"):
        load_weights(build_model(ARCH), state)


def test_evaluation_runs_under_the_training_autocast_level(monkeypatch):
    levels = []

    @contextlib.contextmanager
    def recording_auto_cast(level="O1", custom_black_list=None, **_):
        levels.append((level, tuple(custom_black_list or ())))
        yield

    monkeypatch.setattr(paddle.amp, "auto_cast", recording_auto_cast)
    model = build_model(ARCH)
    batches = [(paddle.rand([2, 3, 32, 32]), paddle.to_tensor([[0], [1]], dtype="int64"))] * 2
    from ppssld.metric import build_metrics

    metrics = build_metrics([{"TopkAcc": {"topk": [1, 2]}}], "Metric.Eval")
    evaluator.evaluate(model, batches, metrics, amp={"level": "O2", "black_list": ["softmax"]})
    assert levels == [("O2", ("softmax",))] * 2
    levels.clear()
    evaluator.evaluate(model, batches, metrics)
    assert levels == []
