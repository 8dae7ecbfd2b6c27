"""Quantization-aware distillation (Slim.quant) end to end on the scikit-learn digits: one epoch trains the fake-quant
student against a frozen float teacher, checkpoints its quantizers, resumes equal to an uninterrupted run, and
exports an int8 model whose outputs are the fake-quant student's within the tolerance measured here; the refusals."""
import copy
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from ppssld.arch.zoo import build_backbone
from ppssld.data.prepare import prepare_dataset
from ppssld.engine.builder import build_eval_model, build_trainer, validate
from ppssld.export.quantize import QuantizationError, quantization_status
from ppssld.slim.apply import quant_points
from ppssld.utils.config import load_config
from ppssld.utils.errors import ConfigError, WeightsError
from tests.conftest import ROOT, distill_config, loader_cfg

pytestmark = pytest.mark.skipif(quantization_status() is not None,
                                reason=f"ONNX Runtime quantization unavailable: {quantization_status()}")

STUDENT = "MobileNetV3_small_x0_35"


def he_weights(path: str, name: str, seed: int) -> str:
    """A zoo backbone with He-scaled random weights and spread BatchNorm statistics (outputs far from uniform)."""
    paddle.seed(seed)
    layer = build_backbone(name, class_num=10)
    rng = np.random.RandomState(seed)
    state = {}
    for key, value in layer.state_dict().items():
        arr = value.numpy()
        if key.endswith("_variance"):
            arr = rng.uniform(0.5, 2.0, arr.shape)
        elif key.endswith("_mean"):
            arr = rng.randn(*arr.shape) * 0.1
        elif arr.ndim >= 2:
            arr = rng.randn(*arr.shape) * np.sqrt(2.0 / np.prod(arr.shape[1:]))
        state[key] = paddle.to_tensor(arr.astype(value.numpy().dtype))
    paddle.save(state, path)
    return path


def qad_config(data: str, root: str, out: str, epochs: int = 1) -> dict:
    """A MobileNetV3 teacher (He weights) distilled into a MobileNetV3 student (its own He start), Slim.quant on."""
    paths = {name: os.path.join(data, name) for name in ("train_list.txt", "val_list.txt", "unlabeled_list.txt")}
    cfg = distill_config(os.path.join(data, "images"), paths, os.path.join(root, "teacher.pdparams"), out, epochs)
    cfg["Arch"]["models"] = [{"Teacher": {"name": STUDENT, "class_num": 10, "pretrained": os.path.join(root, "teacher")}},
                             {"Student": {"name": STUDENT, "class_num": 10, "pretrained": os.path.join(root, "student")}}]
    cfg["Arch"]["infer_add_softmax"] = False  # the export returns logits: compared in units of the logits' int8 step
    cfg["Metric"]["Eval"][0]["DistillationTopkAcc"]["topk"] = [1, 5]
    cfg["Global"].update({"save_inference_dir": os.path.join(root, "inference"), "print_batch_step": 5})
    cfg["Slim"] = {"quant": {"name": "pact"}}
    return cfg


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("qad"))
    data = os.path.join(root, "data")
    prepare_dataset("digits", data, labeled=80, unlabeled=16, seed=0)
    with open(os.path.join(data, "val_list.txt"), encoding="utf-8") as handle:
        rows = handle.readlines()[:48]
    with open(os.path.join(data, "val_list.txt"), "w", encoding="utf-8") as handle:
        handle.writelines(rows)
    he_weights(os.path.join(root, "teacher.pdparams"), STUDENT, 2)
    he_weights(os.path.join(root, "student.pdparams"), STUDENT, 1)
    straight = build_trainer(qad_config(data, root, os.path.join(root, "a"), epochs=2))
    straight.fit()
    return {"root": root, "data": data, "straight": straight}


def _state(trainer) -> dict:
    return {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}


def test_only_the_student_is_quantized_and_its_quantizers_are_checkpointed(project):
    trainer = project["straight"]
    points = quant_points(trainer.model)
    assert len(points) == 55 and all(p.path.startswith("Student.") for p in points)  # 54 Conv2D + the fc
    assert all(p.output.is_ready() for p in points)
    state = paddle.load(os.path.join(project["root"], "a", "DistillationModel", "latest.pdparams"))
    quant_keys = [k for k in state if ".input_quant." in k or ".output_quant." in k]
    assert quant_keys and all(k.startswith("Student.") for k in quant_keys)
    assert {k.rsplit(".", 1)[1] for k in quant_keys} == {"range", "ready", "bounds"}  # PACT's bounds too
    ranges = np.stack([state[k].numpy() for k in quant_keys if k.endswith(".range")])
    assert (ranges[:, 0] <= ranges[:, 1]).all() and (ranges[:, 1] - ranges[:, 0]).min() > 0
    teacher = paddle.load(os.path.join(project["root"], "teacher.pdparams"))
    for key, value in teacher.items():  # the frozen teacher: unchanged and float
        np.testing.assert_array_equal(state[f"Teacher.{key}"].numpy(), value.numpy())
    history = trainer.history
    assert np.isfinite(history[-1]["train"]["loss"]) and history[-1]["train"]["loss"] < history[0]["train"]["loss"]


def test_one_epoch_plus_resume_equals_two_epochs(project):
    root, data = project["root"], project["data"]
    first = build_trainer(qad_config(data, root, os.path.join(root, "b"), epochs=2))
    first.fit(stop_after_epoch=1)
    cfg = qad_config(data, root, os.path.join(root, "b"), epochs=2)
    cfg["Global"]["checkpoints"] = os.path.join(root, "b", "DistillationModel", "latest")
    resumed = build_trainer(cfg)
    assert resumed.start_epoch == 2
    resumed.fit()
    a, b = _state(project["straight"]), _state(resumed)
    assert a.keys() == b.keys()
    worst = {k: float(np.abs(a[k] - b[k]).max()) for k in a}
    assert max(worst.values()) <= 1e-6, sorted(worst.items(), key=lambda kv: -kv[1])[:3]
    assert any(k.endswith("input_quant.range") for k in a)


def test_int8_export_is_the_fake_quant_student(project):
    """The int8 model (ONNX Runtime, trained ranges) against the fake-quant student in Paddle on 48 test images.

    Measured here (MobileNetV3, 55 quantized layers, logits spanning about 32 int8 steps): the int8 logits are
    1.1 steps from the fake-quant student's on average, 5 at most, and give its class on 79% of the images (the
    classes of this 2-epoch toy are close); its float weights without fake quantization are 46 steps away and give
    its class on 40%. The rounding is the same; what remains (float summation order, the int32 bias, the folded
    BatchNorm) flips single values near a rounding boundary, and such flips spread through the layers."""
    from ppssld.data.datasets.imagenet import build_dataset
    from ppssld.export.inference import export_model
    from ppssld.export.runtime import Predictor

    root = project["root"]
    cfg = qad_config(project["data"], root, os.path.join(root, "a"))
    cfg["Global"]["pretrained_model"] = os.path.join(root, "a", "DistillationModel", "latest")
    config = load_config_dict(cfg, root)
    result = export_model(config, with_hub=False)
    assert os.path.basename(result.int8_dir) == f"{STUDENT}_ssld_int8_infer"
    assert sorted(os.listdir(result.int8_dir)) == ["inference.onnx", "inference.yml"]
    with open(os.path.join(result.int8_dir, "inference.yml"), encoding="utf-8") as handle:
        glob = yaml.safe_load(handle)["Global"]
    quant = glob["quantization"]
    assert glob["precision"] == "int8" and quant["trained_tensors"] == 106 and quant["calibrated_nodes"] == 0
    assert "reduce_range" in quant["weights"]
    dataset = build_dataset(config["DataLoader"]["Eval"]["dataset"], "DataLoader.Eval.dataset")
    items = [open(dataset.full_path(i), "rb").read() for i in range(len(dataset))]
    int8 = Predictor(result.int8_dir, batch_size=16).outputs(items)
    fp32 = Predictor(result.model_dir, batch_size=16).outputs(items)
    model = build_eval_model(config)
    model.eval()
    with paddle.no_grad():
        fake = model(paddle.to_tensor(np.stack([dataset.load(i) for i in range(len(dataset))])))["Student"].numpy()
    fc = next(p for p in quant_points(model) if p.kind == "linear")
    step = float(fc.output.qparams()[0].numpy())  # the logits' int8 step (before the float bias)
    int8_gap, fp32_gap = np.abs(int8 - fake) / step, np.abs(fp32 - fake) / step
    assert int8_gap.mean() < 1.5 and int8_gap.max() <= 8, (int8_gap.mean(), int8_gap.max())
    assert int8_gap.mean() < 0.1 * fp32_gap.mean(), (int8_gap.mean(), fp32_gap.mean())
    same = (int8.argmax(1) == fake.argmax(1)).mean()
    assert same >= 0.7 and same > (fp32.argmax(1) == fake.argmax(1)).mean() + 0.2, same
    labels = Predictor(result.int8_dir).classify(items[:3], top_k=2)
    assert [len(r["class_ids"]) for r in labels] == [2, 2, 2]


def load_config_dict(cfg: dict, root: str) -> dict:
    """``cfg`` written to a YAML file and loaded as the CLIs load it."""
    path = os.path.join(root, "cfg.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(cfg, handle, sort_keys=False)
    return load_config(path)


def test_a_float_checkpoint_under_slim_exports_fp32_but_refuses_int8(project):
    from ppssld.export.inference import export_model

    root = project["root"]
    cfg = qad_config(project["data"], root, os.path.join(root, "c"))
    cfg["Global"]["pretrained_model"] = os.path.join(root, "student")  # plain float student keys
    cfg["Arch"] = {"name": STUDENT, "class_num": 10}
    with pytest.raises(QuantizationError, match="holds no trained range"):
        export_model(cfg, save_dir=os.path.join(root, "float_export"), with_hub=False)
    assert os.path.isdir(os.path.join(root, "float_export", f"{STUDENT}_ssld_infer"))  # the fp32 folder is written
    model = build_eval_model(load_config_dict(cfg, root))
    model.eval()
    with pytest.raises(WeightsError, match="never trained with Slim.quant"):  # nor is it evaluated as int8
        model(paddle.zeros([1, 3, 32, 32]))


def refused(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    return str(info.value)


def test_what_is_not_implemented_is_refused_with_one_message(tiny_data, tmp_path):
    root, paths = tiny_data
    base = distill_config(root, paths, str(tmp_path / "t.pdparams"), str(tmp_path / "out"))
    cases = {
        "Slim.prune (PaddleSlim's FPGM": {"Slim": {"prune": {"name": "fpgm", "pruned_ratio": 0.3}}},
        "unknown key Slim.quant.bits": {"Slim": {"quant": {"name": "pact", "bits": 4}}},
        "unknown key Slim.qaunt. Did you mean 'quant'": {"Slim": {"qaunt": {"name": "pact"}}},
        "Slim.quant.name must be one of pact, minmax": {"Slim": {"quant": {"name": "lsq"}}},
        "moving_rate must be a number in [0, 1)": {"Slim": {"quant": {"name": "pact", "moving_rate": 1.5}}},
        "cannot be combined with Global.to_static": {"Slim": {"quant": {"name": "pact"}},
                                                     "Global": {**base["Global"], "to_static": True}},
        "cannot be combined with EMA": {"Slim": {"quant": {"name": "pact"}}, "EMA": {"decay": 0.999}},
    }
    for message, extra in cases.items():
        assert message in refused({**copy.deepcopy(base), **extra}), message
    teacher = copy.deepcopy(base)
    teacher["Slim"] = {"quant": {"name": "minmax"}}
    teacher["Arch"]["infer_model_name"] = "Teacher"
    assert "a teacher is never quantized" in refused(teacher)


def test_cli_refusal_exits_2_without_a_traceback(tiny_data, tmp_path):
    root, paths = tiny_data
    cfg = distill_config(root, paths, str(tmp_path / "t.pdparams"), str(tmp_path / "out"))
    cfg["DataLoader"]["Train"] = loader_cfg(root, paths["train_list.txt"], True)
    cfg["Slim"] = {"prune": {"name": "fpgm", "pruned_ratio": 0.3}}
    path = tmp_path / "prune.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([ROOT] + sys.path))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "Slim.prune" in proc.stderr and "not implemented" in proc.stderr


def test_qad_from_an_exact_soft_label_cache_equals_online_qad(tiny_data, tmp_path):
    """The cache stands where the teacher stood (V = epochs, K = classes, float32 logits): the quantized student
    trains to the same weights and ranges, bit for bit where the teacher's logits do not depend on the batch
    (as on the AMD EPYC; tests/test_soft_label_cache.py measures that noise)."""
    from ppssld.cache.generate import generate
    from tests.conftest import save_random_backbone

    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), name="ResNet18", class_num=4, seed=1)
    student = save_random_backbone(str(tmp_path / "student.pdparams"), name=STUDENT, class_num=4, seed=2)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "online"), epochs=2)
    cfg["Arch"]["models"][1]["Student"]["pretrained"] = student
    cfg["Global"]["eval_during_train"] = False
    cfg["Slim"] = {"quant": {"name": "minmax"}}
    generate(copy.deepcopy(cfg), str(tmp_path / "cache"), views=2, topk=4, chunk_size=16, prob_dtype="float32")
    online = build_trainer(copy.deepcopy(cfg))
    online.fit()
    cached_cfg = copy.deepcopy(cfg)
    cached_cfg["Global"].update({"output_dir": str(tmp_path / "cached"), "soft_label_cache": str(tmp_path / "cache")})
    cached = build_trainer(cached_cfg)
    assert len(quant_points(cached.model)) == 55
    cached.fit()
    a = {k: v for k, v in _state(online).items() if k.startswith("Student.")}
    b = _state(cached)
    assert a.keys() == b.keys() and any(k.endswith("output_quant.range") for k in a)
    start = paddle.load(student)
    moved = max(float(np.abs(a[k] - start[k[len("Student."):]].numpy()).max()) for k in a if k[8:] in start)
    apart = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert moved > 1e-3 and apart <= 1e-6, (moved, apart)
