"""The zoo door imports one backbone's module, not all of paddleclas (faiss, sklearn, cv2 deploy tools),
and builds exactly the model the full zoo builds; a later full ``import paddleclas`` still works."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tools")
import numpy as np, paddle
import train  # noqa: F401  (the training tool's imports)
from ppssld.arch import zoo
from ppssld.arch.build import build_model

def build(name):
    paddle.seed(3)
    with paddle.utils.unique_name.guard():
        model = build_model({"name": name, "class_num": 7})
    return [(p.name, k, np.asarray(v.numpy())) for (k, v), p in zip(model.state_dict().items(), model.parameters())]

light = build("MobileNetV3_small_x0_35")
heavy = ["faiss", "sklearn", "matplotlib", "paddleclas", "paddleclas.ppcls.arch.backbone",
         "paddleclas.ppcls.utils", "paddleclas.deploy", "visualdl", "paddlehub"]
loaded = [m for m in heavy if m in sys.modules]
factory = zoo._factory("MobileNetV3_small_x0_35")
import paddleclas  # the full package, its __init__ files run as usual
full = build("MobileNetV3_small_x0_35")
same = len(light) == len(full) == 214 and all(
    a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2]) for a, b in zip(light, full))
print(json.dumps({"loaded": loaded, "same": same, "reused": zoo._zoo()["MobileNetV3_small_x0_35"] is factory,
                  "zoo_size": len(zoo.backbone_names()), "has_api": hasattr(paddleclas, "PaddleClas")}))
"""


def test_training_path_imports_one_backbone_module_and_builds_the_same_model():
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, ROOT], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"the training path imported {result['loaded']}"
    assert result["same"], "the model built from the backbone's module alone differs from the full zoo's"
    assert result["reused"] and result["has_api"] and result["zoo_size"] > 300


def test_unknown_backbone_still_gets_the_full_zoo_suggestion():
    from ppssld.arch.zoo import build_backbone
    from ppssld.utils.errors import ConfigError
    import pytest

    with pytest.raises(ConfigError, match="unknown backbone 'MobileNetV3_small_x0_36'.*MobileNetV3_small_x0_35"):
        build_backbone("MobileNetV3_small_x0_36", class_num=3)
