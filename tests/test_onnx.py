"""Optional ONNX export: paddle2onnx conversion and onnxruntime parity with Paddle Inference and dygraph."""
import importlib.util
import os

import numpy as np
import paddle
import pytest

from test_export import dygraph_student, make_project

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("paddle2onnx") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="paddle2onnx/onnxruntime are not installed (optional extra: pip install .[onnx])")


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    from ppssld.export.inference import export_model
    from ppssld.export.onnx import paddle2onnx_status

    proj = make_project(str(tmp_path_factory.mktemp("onnx")), images=5)
    ok, reason = paddle2onnx_status("inference.json" if paddle.__version__.startswith("3") else "inference.pdmodel")
    if not ok:
        pytest.skip(reason)
    proj["result"] = export_model(proj["config"], weights=proj["ckpt"], with_hub=False, with_onnx=True)
    return proj


def test_onnx_file_is_written_beside_the_model(onnx_export):
    assert onnx_export["result"].onnx == os.path.join(onnx_export["result"].model_dir, "inference.onnx")
    assert os.path.getsize(onnx_export["result"].onnx) > 100_000
    # paddle2onnx's default optimizer (polygraphy) turns on pip auto-install, which replaced numpy once
    assert os.environ.get("POLYGRAPHY_AUTOINSTALL_DEPS", "0") == "0"


def test_onnxruntime_matches_paddle_inference_and_dygraph(onnx_export):
    from ppssld.export.onnx import OnnxPredictor
    from ppssld.data.image import read_bytes as read_image
    from ppssld.export.runtime import Predictor

    paddle_pred = Predictor(onnx_export["result"].model_dir, enable_mkldnn=False, batch_size=5)
    batch = np.stack([paddle_pred.preprocess(read_image(p)) for p in onnx_export["images"]])
    ort = OnnxPredictor(onnx_export["result"].onnx)
    got = ort.run(batch)
    logits = dygraph_student(onnx_export["student"])(paddle.to_tensor(batch))
    reference = paddle.nn.functional.softmax(logits).numpy()  # the converted graph keeps PaddleClas's softmax, once
    assert ort.output == paddle_pred.output == "softmax"
    assert got.shape == reference.shape == (5, 4)
    assert np.abs(got - reference).max() < 1e-5
    assert np.abs(got - paddle_pred.run(batch)).max() < 1e-5
    assert ort.run(batch[:1]).shape == (1, 4)  # dynamic batch


def test_onnx_of_a_logits_export_returns_the_logits(onnx_export, tmp_path):
    """``Arch.infer_add_softmax: False``: no activation in the Paddle graph, none in the ONNX graph."""
    import copy

    from ppssld.export.inference import export_model
    from ppssld.export.onnx import OnnxPredictor

    config = copy.deepcopy(onnx_export["config"])
    config["Arch"]["infer_add_softmax"] = False
    result = export_model(config, weights=onnx_export["ckpt"], save_dir=str(tmp_path), with_hub=False,
                          with_onnx=True)
    ort = OnnxPredictor(result.onnx)
    batch = np.random.RandomState(0).rand(3, 3, 32, 32).astype("float32")
    reference = dygraph_student(onnx_export["student"])(paddle.to_tensor(batch)).numpy()
    assert ort.output == "logits"
    assert np.abs(ort.run(batch) - reference).max() < 1e-4


def test_old_paddle2onnx_is_reported_for_the_json_format(monkeypatch):
    import paddle2onnx

    from ppssld.export.onnx import paddle2onnx_status

    monkeypatch.setattr(paddle2onnx, "__version__", "1.3.1", raising=False)
    ok, reason = paddle2onnx_status("inference.json")
    assert not ok and "needs paddle2onnx >= 2.0" in reason
    assert paddle2onnx_status("inference.pdmodel")[0]
