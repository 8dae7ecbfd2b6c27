"""deploy/python/predict_cls.py and the shared predictor: inputs, JSON, errors, benchmark, top-k."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from test_export import CLASSES, dygraph_topk, make_project
from ppssld.export.inference import export_model
from ppssld.export.runtime import (LEGACY_MODEL, ModelDirError, Predictor, list_images, parse_shape_range,
                                   predict_paths, resolve_model_files, softmax, topk_results)
from ppssld.utils.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "deploy", "python", "predict_cls.py")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    proj = make_project(str(tmp_path_factory.mktemp("deploy")), images=5)
    proj["result"] = export_model(proj["config"], weights=proj["ckpt"], with_hub=False)
    folder = os.path.join(proj["root"], "mixed")
    os.makedirs(folder)
    for path in proj["images"][:3]:
        shutil.copy(path, folder)
    with open(os.path.join(folder, "00001_broken.png"), "wb") as handle:
        handle.write(b"not an image at all")
    proj["mixed"] = folder
    return proj


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_folder_json_and_bad_image(exported, tmp_path):
    out = str(tmp_path / "res.json")
    proc = run_cli("--model_dir", exported["result"].model_dir, "--image", exported["mixed"], "--json", out,
                   "--batch_size", "2", "--enable_mkldnn", "false", "--top_k", "2", "--benchmark", "--repeats", "2")
    assert proc.returncode == 1, proc.stderr[-2000:]  # one image failed, the others were classified
    results = json.load(open(out, encoding="utf-8"))
    assert [os.path.basename(r["path"]) for r in results] == ["00000.png", "00001.png", "00001_broken.png",
                                                              "00002.png"]
    broken = results[2]
    assert "error" in broken and broken["class_ids"] == [] and "00001_broken.png" in proc.stdout
    predictor = Predictor(exported["result"].model_dir, batch_size=2)
    expected = predict_paths(predictor, [r["path"] for r in results if "error" not in r], top_k=2)
    for got, ref in zip([r for r in results if "error" not in r], expected, strict=True):
        assert set(got) == {"path", "class_ids", "scores", "label_names"}
        assert got["class_ids"] == ref["class_ids"] and len(got["class_ids"]) == 2
        np.testing.assert_allclose(got["scores"], ref["scores"], atol=1e-5)
        assert got["label_names"] == [CLASSES[i] for i in got["class_ids"]]
    good = [r for r in results if "error" not in r]
    ids, scores = dygraph_topk(exported, [r["path"] for r in good], 2)  # the CLI agrees with the dygraph student
    for got, want_ids, want_scores in zip(good, ids, scores, strict=True):
        assert got["class_ids"] == want_ids.tolist()
        np.testing.assert_allclose(got["scores"], want_scores, atol=1e-4)
    stats = json.loads(proc.stdout.split("benchmark: ", 1)[1].splitlines()[0])
    assert stats["batch_size"] == 2 and stats["batches"] == 4 and stats["throughput_ips"] > 0
    assert stats["latency_ms_p95"] >= stats["latency_ms_p50"] > 0


def test_cli_missing_and_incomplete_model_dir(exported, tmp_path):
    proc = run_cli("--model_dir", str(tmp_path / "nowhere"), "--image", exported["images"][0])
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    broken = str(tmp_path / "broken_infer")
    shutil.copytree(exported["result"].model_dir, broken)
    os.remove(os.path.join(broken, "inference.pdiparams"))
    with pytest.raises(ModelDirError, match=r"missing inference.pdiparams"):
        resolve_model_files(broken)


def test_legacy_pdmodel_layout_is_found(tmp_path):
    for name in (LEGACY_MODEL, "inference.pdiparams", "inference.yml"):
        (tmp_path / name).write_bytes(b"")
    files = resolve_model_files(str(tmp_path))
    assert files.model.endswith(LEGACY_MODEL) and files.params.endswith("inference.pdiparams")


def test_list_file_and_image_root(exported, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("images/00000.png 0\nimages/00002.png\n", encoding="utf-8")
    data_root = os.path.dirname(os.path.dirname(exported["images"][0]))
    paths = list_images(str(listing), image_root=data_root)
    assert paths == [os.path.join(data_root, "images", "00000.png"), os.path.join(data_root, "images", "00002.png")]
    assert list_images(exported["images"][1]) == [exported["images"][1]]
    with pytest.raises(DataError, match="does not exist"):
        list_images(str(tmp_path / "missing.jpg"))


def test_topk_order_and_softmax():
    logits = np.array([[0.0, 3.0, 1.0, 3.0], [5.0, -1.0, 2.0, 0.5]], np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(softmax(logits), probs, rtol=1e-6)
    res = topk_results(softmax(logits), 3, CLASSES)
    assert res[0]["class_ids"] == [1, 3, 2] and res[1]["class_ids"] == [0, 2, 3]
    assert res[1]["label_names"] == ["cat", "big bird", "fish"]
    np.testing.assert_allclose(res[1]["scores"], probs[1, [0, 2, 3]], rtol=1e-6)
    assert len(topk_results(probs, 99, None)[0]["class_ids"]) == 4


def test_label_names_fall_back_to_the_class_id_as_the_hub_module_does():
    logits = np.array([[0.0, 3.0, 1.0, 2.0]], np.float32)
    assert topk_results(logits, 3, None)[0]["label_names"] == ["1", "3", "2"]
    # a name list shorter than the classes, or with an empty name, names the rest by id
    assert topk_results(logits, 3, ["a", "", "c"])[0]["label_names"] == ["1", "3", "c"]


def test_trt_shape_range_parsing():
    assert parse_shape_range("1,3,32,32:4,3,32,32:8,3,32,32") == ([1, 3, 32, 32], [4, 3, 32, 32], [8, 3, 32, 32])
    with pytest.raises(ValueError, match="min:opt:max"):
        parse_shape_range("1,3,32,32")


def test_gpu_and_tensorrt_options_are_checked(exported):
    with pytest.raises(ValueError, match="TensorRT needs --device gpu"):
        Predictor(exported["result"].model_dir, use_tensorrt=True)
    with pytest.raises(ValueError, match="precision"):
        Predictor(exported["result"].model_dir, precision="int3")


def test_gpu_on_a_cpu_build_is_a_clear_error(exported):
    import paddle

    if paddle.is_compiled_with_cuda():
        pytest.skip("this paddle build has CUDA; the CPU-only message does not apply")
    with pytest.raises(ValueError, match="no CUDA"):
        Predictor(exported["result"].model_dir, device="gpu")
