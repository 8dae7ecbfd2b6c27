"""Export: student extraction, _ssld naming, strict-loadable pretrained weights, inference.yml, parity."""
import os
from typing import Any, Dict

import numpy as np
import paddle
import pytest
import yaml

from conftest import distill_config, write_images
from ppssld.arch.weights import load_weights
from ppssld.arch.zoo import build_backbone
from ppssld.utils.config import load_config
from ppssld.data.datasets.imagenet import build_dataset
from ppssld.export.infer_config import read_infer_config, transform_ops
from ppssld.export.inference import export_model
from ppssld.export.labels import parse_class_names
from ppssld.data.image import read_bytes as read_image
from ppssld.export.runtime import Predictor
from ppssld.export.student import export_target, select_state
from ppssld.utils.errors import ConfigError, WeightsError

STUDENT = "MobileNetV3_small_x0_35"
CLASSES = ["cat", "dog", "big bird", "fish"]


def random_state(seed: int) -> Dict[str, np.ndarray]:
    """A student state with He-scaled random weights, so logits are far from zero and differ per image."""
    layer = build_backbone(STUDENT, class_num=len(CLASSES))
    rng = np.random.RandomState(seed)
    out = {}
    for key, value in layer.state_dict().items():
        arr = value.numpy()
        if key.endswith("_variance"):
            arr = rng.uniform(0.5, 2.0, arr.shape)
        elif key.endswith("_mean"):
            arr = rng.randn(*arr.shape) * 0.1
        elif arr.ndim >= 2:
            arr = rng.randn(*arr.shape) * np.sqrt(2.0 / np.prod(arr.shape[1:])) * (3.0 if key == "fc.weight" else 1.0)
        out[key] = arr.astype("float32")
    return out


def make_project(root: str, plain: bool = False, images: int = 6) -> Dict[str, Any]:
    """Tiny images, a config file, and a checkpoint (DistillationModel keys, or plain keys).

    The teacher's ``pretrained`` file does not exist: building or loading the teacher would fail.
    """
    data = os.path.join(root, "data")
    paths = write_images(data, images, len(CLASSES))
    cfg = distill_config(data, paths, os.path.join(root, "no_such_teacher.pdparams"), os.path.join(root, "out"))
    cfg["Arch"]["models"][0]["Teacher"]["name"] = STUDENT
    cfg["Global"]["save_inference_dir"] = os.path.join(root, "inference")
    labels = os.path.join(root, "label_list.txt")
    with open(labels, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{i} {name}\n" for i, name in enumerate(CLASSES)))
    cfg["Infer"] = {"PostProcess": {"name": "Topk", "topk": 3, "class_id_map_file": labels}}
    student, teacher = random_state(1), random_state(2)
    if plain:
        cfg["Arch"] = {"name": STUDENT, "class_num": len(CLASSES)}
        state = dict(student)
    else:
        state = {**{f"Teacher.{k}": v for k, v in teacher.items()}, **{f"Student.{k}": v for k, v in student.items()}}
    ckpt = os.path.join(root, "best_model.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, ckpt)
    cfg_path = os.path.join(root, "config.yaml")
    with open(cfg_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(cfg, handle, sort_keys=False)
    image_files = sorted(os.path.join(data, "images", f) for f in os.listdir(os.path.join(data, "images")))
    return {"root": root, "cfg_path": cfg_path, "ckpt": ckpt, "student": student, "teacher": teacher,
            "images": image_files, "config": load_config(cfg_path)}


def dygraph_student(student: Dict[str, np.ndarray]) -> paddle.nn.Layer:
    """The reference: a fresh zoo backbone holding the student weights, in eval mode."""
    layer = build_backbone(STUDENT, class_num=len(CLASSES))
    load_weights(layer, {k: paddle.to_tensor(v) for k, v in student.items()}, strict=True)
    layer.eval()
    return layer


def dygraph_topk(proj: Dict[str, Any], paths, k: int):
    """Top-k (class ids, softmax scores) of the dygraph student on ``paths``, preprocessed by the Eval dataset.

    The independent reference for the exported model's consumers (predictor CLI, PaddleHub module).
    """
    dataset = build_dataset(proj["config"]["DataLoader"]["Eval"]["dataset"], "DataLoader.Eval.dataset")
    index = {os.path.basename(dataset.full_path(i)): i for i in range(len(dataset))}  # paths may be copies
    batch = np.stack([dataset.load(index[os.path.basename(p)]) for p in paths])
    logits = dygraph_student(proj["student"])(paddle.to_tensor(batch)).numpy().astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    ids = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(probs, ids, 1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    proj = make_project(str(tmp_path_factory.mktemp("export")))
    weights = proj["ckpt"][: -len(".pdparams")]  # the suffix is optional
    proj["result"] = export_model(proj["config"], weights=weights, with_hub=False)
    return proj


def test_export_writes_ssld_named_student_only(exported):
    res = exported["result"]
    assert os.path.basename(res.model_dir) == f"{STUDENT}_ssld_infer"
    assert sorted(os.listdir(res.model_dir)) == ["inference.json", "inference.pdiparams", "inference.yml"]
    assert os.path.basename(res.pretrained) == f"{STUDENT}_ssld_pretrained.pdparams"
    assert not os.path.exists(os.path.join(exported["root"], "no_such_teacher.pdparams"))  # never needed


def test_pretrained_weights_are_plain_student_keys_and_strict_loadable(exported):
    state = paddle.load(exported["result"].pretrained)
    assert not any(k.startswith(("Student.", "Teacher.")) for k in state)
    fresh = build_backbone(STUDENT, class_num=len(CLASSES))
    assert load_weights(fresh, exported["result"].pretrained, strict=True) == []
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), exported["student"][key], err_msg=key)
    assert not np.allclose(exported["student"]["fc.weight"], exported["teacher"]["fc.weight"])


def test_inference_yml_preprocessing_equals_eval_transforms(exported):
    infer = read_infer_config(os.path.join(exported["result"].model_dir, "inference.yml"))
    eval_ops = exported["config"]["DataLoader"]["Eval"]["dataset"]["transform_ops"]
    assert infer["PreProcess"]["transform_ops"] == eval_ops
    assert infer["Global"]["image_shape"] == [3, 32, 32]
    assert infer["PostProcess"]["Topk"] == {"topk": 3, "label_list": CLASSES}
    dataset = build_dataset(exported["config"]["DataLoader"]["Eval"]["dataset"], "DataLoader.Eval.dataset")
    predictor = Predictor(exported["result"].model_dir)
    for i in range(3):
        np.testing.assert_array_equal(predictor.preprocess(read_image(dataset.full_path(i))), dataset.load(i))


def test_hwc_eval_transforms_get_an_explicit_to_chw(exported):
    config = {"DataLoader": {"Eval": {"dataset": {"transform_ops": [
        {"DecodeImage": {"to_rgb": True}}, {"ResizeImage": {"size": 32}},
        {"NormalizeImage": {"scale": 0.00392157, "order": ""}}]}}}}
    ops = transform_ops(config)
    assert ops[:3] == config["DataLoader"]["Eval"]["dataset"]["transform_ops"] and ops[3] == {"ToCHWImage": None}
    with pytest.raises(ConfigError, match="Infer.transforms"):
        transform_ops({"DataLoader": {}}, "eval")


def _batch(exported) -> np.ndarray:
    predictor = Predictor(exported["result"].model_dir)
    return np.stack([predictor.preprocess(read_image(p)) for p in exported["images"]])


def test_parity_with_dygraph_student_mkldnn_off(exported):
    """The graph ends in PaddleClas's softmax: its outputs are the softmax of the dygraph student's logits."""
    batch = _batch(exported)
    reference = dygraph_student(exported["student"])(paddle.to_tensor(batch)).numpy()
    assert np.abs(reference).max() > 0.5 and np.abs(reference - reference[0]).max() > 1e-2  # non-trivial logits
    predictor = Predictor(exported["result"].model_dir, enable_mkldnn=False, batch_size=4)
    assert predictor.output == "softmax" and exported["result"].infer_config["Global"]["output"] == "softmax"
    got = predictor.outputs([read_image(p) for p in exported["images"]])
    assert got.shape == reference.shape
    probs = np.exp(reference - reference.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert np.abs(got - probs).max() < 1e-5
    assert np.abs(got.sum(1) - 1).max() < 1e-5


def test_top1_agrees_with_mkldnn_on(exported):
    batch = _batch(exported)
    reference = dygraph_student(exported["student"])(paddle.to_tensor(batch)).numpy()
    predictor = Predictor(exported["result"].model_dir, enable_mkldnn=True, cpu_threads=1, batch_size=2)
    np.testing.assert_array_equal(predictor.run(batch).argmax(1), reference.argmax(1))


def test_plain_config_exports_the_plain_model(tmp_path):
    proj = make_project(str(tmp_path), plain=True, images=2)
    res = export_model(proj["config"], weights=proj["ckpt"], name="tiny", with_hub=False)
    assert os.path.basename(res.model_dir) == "tiny_infer" and res.pretrained.endswith("tiny_pretrained.pdparams")
    assert "distillation_model" not in res.infer_config["Global"]
    distill_ckpt = str(tmp_path / "distill.pdparams")
    paddle.save({f"Student.{k}": paddle.to_tensor(v) for k, v in proj["student"].items()}, distill_ckpt)
    with pytest.raises(WeightsError, match="DistillationModel checkpoint"):
        export_model(proj["config"], weights=distill_ckpt, name="tiny", with_hub=False)


def test_checkpoint_without_student_keys_is_refused(tmp_path, exported):
    only_teacher = str(tmp_path / "teacher_only.pdparams")
    paddle.save({f"Teacher.{k}": paddle.to_tensor(v) for k, v in exported["teacher"].items()}, only_teacher)
    with pytest.raises(WeightsError, match="none of 'Student'"):
        export_model(exported["config"], weights=only_teacher, save_dir=str(tmp_path), with_hub=False)
    partial = {f"Student.{k}": paddle.to_tensor(v) for k, v in exported["student"].items() if k != "fc.bias"}
    paddle.save(partial, str(tmp_path / "partial.pdparams"))
    with pytest.raises(WeightsError, match="missing fc.bias"):
        export_model(exported["config"], weights=str(tmp_path / "partial"), save_dir=str(tmp_path), with_hub=False)


def test_no_weights_is_an_error(exported):
    config = dict(exported["config"], Global=dict(exported["config"]["Global"], pretrained_model=None))
    with pytest.raises(ConfigError, match="Global.pretrained_model"):
        export_model(config, with_hub=False)


def test_prefix_is_matched_exactly():
    target = export_target({"name": "DistillationModel", "freeze_params_list": [True, False],
                            "models": [{"Teacher": {"name": STUDENT}}, {"Student": {"name": STUDENT}}]})
    assert target.key == "Student" and target.siblings == ["Teacher"]
    state = {"Student.fc.weight": 1, "StudentX.fc.weight": 2, "Teacher.fc.weight": 3, "Student.fc.bias": 4}
    assert select_state(state, target, "ckpt") == {"fc.weight": 1, "fc.bias": 4}


def test_class_name_files():
    assert parse_class_names("1 dog\n0 cat\n2 big bird\n") == ["cat", "dog", "big bird"]
    assert parse_class_names("cat\n\ndog\n") == ["cat", "dog"]
    assert parse_class_names("0\n1\n") == ["0", "1"]
    with pytest.raises(ConfigError, match="missing"):
        parse_class_names("0 cat\n2 dog\n")
    with pytest.raises(ConfigError, match="twice"):
        parse_class_names("0 cat\n0 dog\n")


def test_image_shape_must_match_the_transforms(exported):
    config = dict(exported["config"], Global=dict(exported["config"]["Global"], image_shape=[3, 64, 64]))
    with pytest.raises(ConfigError, match="disagrees"):
        export_model(config, weights=exported["ckpt"], with_hub=False)


def test_class_names_must_match_class_num(tmp_path, exported):
    names = tmp_path / "three.txt"
    names.write_text("a\nb\nc\n", encoding="utf-8")
    config = dict(exported["config"], Global=dict(exported["config"]["Global"], class_names=str(names)))
    with pytest.raises(ConfigError, match="3 class names but the model has class_num=4"):
        export_model(config, weights=exported["ckpt"], save_dir=str(tmp_path), with_hub=False)


def test_one_command_gives_folder_weights_and_hub_module(tmp_path):
    import subprocess
    import sys

    proj = make_project(str(tmp_path), images=2)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root)
    cmd = [sys.executable, os.path.join(root, "tools", "export_model.py"), "-c", proj["cfg_path"], "-o",
           f"Global.pretrained_model={proj['ckpt'][:-len('.pdparams')]}", f"Global.save_inference_dir={tmp_path}/x"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "x"
    assert (out / f"{STUDENT}_ssld_infer" / "inference.json").is_file()
    assert (out / f"{STUDENT}_ssld_pretrained.pdparams").is_file()
    assert (out / "hub" / f"{STUDENT.lower()}_ssld" / "module.py").is_file()
    assert f"PaddleHub module: {out}/hub/{STUDENT.lower()}_ssld" in proc.stdout
    bad = subprocess.run(cmd[:-2] + ["Global.pretrained_model=/nowhere/best_model"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 2 and "/nowhere/best_model" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")


def test_multi_output_backbone_is_refused_with_a_clear_message():
    from ppssld.export.student import count_classes

    class TwoHeads(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.fc = paddle.nn.Linear(12, 3)

        def forward(self, x):
            y = self.fc(paddle.flatten(x, 1))
            return [y, y * 0.3]

    with pytest.raises(ConfigError, match="returns 2 outputs"):
        count_classes(TwoHeads(), [3, 2, 2])
    assert count_classes(paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(12, 5)), [3, 2, 2]) == 5
