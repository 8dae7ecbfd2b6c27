"""PaddleHub module: written by export, loaded by hub.Module(directory=...), installed as `hub install` does.

paddlehub 2.4.0 imports beside paddle 3.x only with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python set
before protobuf is first imported, which paddle does; so the hub side runs in a child process.
"""
import base64
import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from test_export import dygraph_topk, make_project
from ppssld.export.hub import check_module_name, default_module_name, write_hub_module
from ppssld.export.inference import export_model
from ppssld.export.runtime import ModelDirError, Predictor, predict_paths
from ppssld.utils.errors import ConfigError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("paddlehub") is None,
                                reason="paddlehub is not installed (optional extra: pip install .[hub])")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["猫", "狗", "大 鸟", "鱼"]
MODULE = "mv3_tiny_ssld"

DRIVER = r'''
import base64, json, sys
import cv2
import paddlehub as hub
from paddlehub.commands.install import InstallCommand

module_dir, images, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
module = hub.Module(directory=module_dir)
report = {"name": module.name, "version": str(module.version), "serving": module.serving_func_name,
          "type": module.type}
report["by_paths"] = module.predict(paths=images, top_k=3)
report["by_arrays"] = module.predict(images=[cv2.imread(p) for p in images], top_k=2)
b64 = [base64.b64encode(open(p, "rb").read()).decode("ascii") for p in images]
report["served"] = getattr(module, module.serving_func_name)(images=b64, top_k=3)
report["installed"] = InstallCommand().execute([module_dir])
installed = hub.Module(name=module.name)
report["installed_dir"] = installed.directory
report["installed_paths"] = installed.predict(paths=images[:1], top_k=1)
with open(out, "w", encoding="utf-8") as handle:
    json.dump(report, handle, ensure_ascii=False)
'''


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    proj = make_project(str(root / "项目 目录"), images=3)  # non-ASCII path with a space
    names = root / "names.txt"
    names.write_text("".join(f"{n}\n" for n in NAMES), encoding="utf-8")
    config = dict(proj["config"], Global=dict(proj["config"]["Global"], class_names=str(names)))
    proj["result"] = export_model(config, weights=proj["ckpt"], hub_name=MODULE)
    driver = root / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    out = root / "report.json"
    home = root / "hub_home"
    home.mkdir()
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", HUB_HOME=str(home), OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, str(driver), proj["result"].hub_dir, json.dumps(proj["images"]), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    proj["report"] = json.loads(out.read_text(encoding="utf-8"))
    proj["home"] = str(home)
    return proj


def test_module_folder_layout(hub_run):
    hub_dir = hub_run["result"].hub_dir
    assert os.path.basename(hub_dir) == MODULE and "项目 目录" in hub_dir
    assert sorted(os.listdir(hub_dir)) == ["__init__.py", "inference.json", "inference.pdiparams", "inference.yml",
                                           "label_list.txt", "module.py"]
    assert open(os.path.join(hub_dir, "label_list.txt"), encoding="utf-8").read().splitlines()[2] == "2 大 鸟"
    assert "@moduleinfo(name='mv3_tiny_ssld'" in open(os.path.join(hub_dir, "module.py"), encoding="utf-8").read()


def test_hub_module_loads_and_matches_the_predictor(hub_run):
    report = hub_run["report"]
    assert report["name"] == MODULE and report["version"] == "1.0.0" and report["serving"] == "serving_method"
    reference = predict_paths(Predictor(hub_run["result"].model_dir), hub_run["images"], top_k=3)
    for got, ref in zip(report["by_paths"], reference, strict=True):
        assert list(got) == ref["label_names"] and all(n in NAMES for n in got)
        np.testing.assert_allclose(list(got.values()), ref["scores"], atol=1e-6)
        assert list(got.values()) == sorted(got.values(), reverse=True)
    for arrays, paths in zip(report["by_arrays"], report["by_paths"], strict=True):  # BGR arrays == files
        assert list(arrays) == list(paths)[:2]
        np.testing.assert_allclose(list(arrays.values()), list(paths.values())[:2], atol=1e-6)
    assert report["served"] == report["by_paths"]
    ids, scores = dygraph_topk(hub_run, hub_run["images"], 3)  # and the dygraph student itself
    for got, want_ids, want_scores in zip(report["by_paths"], ids, scores, strict=True):
        assert list(got) == [NAMES[i] for i in want_ids]
        np.testing.assert_allclose(list(got.values()), want_scores, atol=1e-4)


def test_hub_install_registers_the_module(hub_run):
    report = hub_run["report"]
    assert report["installed"] is True
    assert os.path.realpath(report["installed_dir"]) == os.path.realpath(os.path.join(hub_run["home"], "modules",
                                                                                      MODULE))
    assert report["installed_paths"][0] == dict(list(report["by_paths"][0].items())[:1])


def test_module_name_and_folder_errors(hub_run, tmp_path):
    with pytest.raises(ConfigError, match="Python identifier"):
        check_module_name("my-module")
    assert default_module_name("MobileNetV3_small_x0_35_ssld") == "mobilenetv3_small_x0_35_ssld"
    assert default_module_name("2-net") == "m_2_net"
    with pytest.raises(ModelDirError, match="does not exist"):
        write_hub_module(str(tmp_path / "none"), "ok_name", str(tmp_path))


def test_in_process_classifier_takes_bgr_arrays(hub_run):
    from ppssld.export.hub import HubClassifier

    clf = HubClassifier(hub_run["result"].hub_dir)
    img = cv2.imread(hub_run["images"][0])
    from_array = clf.predict(images=[img], top_k=4)[0]
    from_file = clf.predict(paths=[hub_run["images"][0]], top_k=4)[0]
    assert from_array == from_file
    swapped = clf.predict(images=[np.ascontiguousarray(img[:, :, ::-1])], top_k=4)[0]
    assert swapped != from_file  # the channel order matters, so BGR really is converted
    b64 = base64.b64encode(open(hub_run["images"][0], "rb").read()).decode("ascii")
    assert clf.serve([b64], top_k=4)[0] == from_file
