"""A teacher's own input: the student's very views, resized and normalised for the teacher, online, in the
engine, in mining and in the soft-label cache; and the refusals that name the key."""
import copy

import cv2
import numpy as np
import paddle
import pytest

from ppssld.cache.generate import generate
from ppssld.cache.manifest import read_manifest
from ppssld.cache.reader import SoftLabelCache
from ppssld.data.datasets.imagenet import build_dataset
from ppssld.engine.builder import build_full_model, build_trainer, validate
from ppssld.teacher.frozen import teacher_from_config
from ppssld.teacher.choose import EngineTeacher
from ppssld.teacher.engines import softmax_gap
from ppssld.utils.config import global_seed
from ppssld.utils.errors import ConfigError
from tests.conftest import distill_config, save_random_backbone

SIZE = 48  # the teacher's input; the student's views are 32x32
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # the teacher's; the student's are 0.5 / 0.5
STUDENT_OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
               {"RandCropImage": {"size": 32}},  # random area and aspect: a second draw would show
               {"RandFlipImage": {"flip_code": 1}},
               {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                   "order": ""}},
               {"ToCHWImage": None}]


def input_config(root, paths, teacher, out, **extra):
    """The tiny distillation config with a random crop and a teacher at 48x48 and ImageNet's mean/std."""
    cfg = distill_config(root, paths, teacher, out)
    cfg["DataLoader"]["Train"]["dataset"]["transform_ops"] = copy.deepcopy(STUDENT_OPS)
    cfg["Arch"]["teacher_engine"] = "dygraph"
    cfg["Arch"]["models"][0]["Teacher"]["input"] = dict({"size": [SIZE, SIZE], "mean": MEAN, "std": STD}, **extra)
    cfg["Global"]["eval_during_train"] = False
    return cfg


@pytest.fixture
def setup(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4, seed=1)
    return input_config(root, paths, teacher, str(tmp_path / "out")), tmp_path


def views_of(cfg, ops, epoch, index):
    """The training views of images ``index`` in ``epoch`` through ``ops`` (same RNG keys as training)."""
    dataset_cfg = dict(cfg["DataLoader"]["Train"]["dataset"], transform_ops=ops)
    dataset = build_dataset(dataset_cfg, "test")
    dataset.set_seed(global_seed(cfg))
    dataset.set_epoch(epoch)
    return np.stack([dataset[i][0] for i in index])


def by_hand(cfg, epoch, index, size=SIZE, mean=MEAN, std=STD):
    """The same views prepared for the teacher without ppssld's code: the pixels before NormalizeImage, resized
    with OpenCV (bilinear, float32), normalised with the teacher's mean/std, CHW."""
    pixels = views_of(cfg, STUDENT_OPS[:3], epoch, index).astype(np.float32)  # 0..255, same draws
    pixels = pixels.transpose(0, 2, 3, 1)  # the dataset hands out CHW
    resized = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_LINEAR) for p in pixels])
    return ((resized / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(0, 3, 1, 2)


def test_the_teachers_output_on_the_students_batch_equals_it_on_its_views_prepared_by_hand(setup):
    cfg, _ = setup
    model = build_full_model(cfg)
    index = list(range(8))
    student = paddle.to_tensor(views_of(cfg, STUDENT_OPS, 1, index))
    assert student.shape == [8, 3, 32, 32]
    out = model(student)
    assert out["Student"].shape == [8, 4]  # the student still runs on its own 32x32 views
    with paddle.no_grad():
        hand = model.Teacher(paddle.to_tensor(by_hand(cfg, 1, index).astype(np.float32))).numpy()
        plain = model.Teacher(student).numpy()  # what PaddleClas would feed it
    got = out["Teacher"].numpy()
    assert np.abs(got - hand).max() < 1e-4 * max(1.0, np.abs(hand).max()), np.abs(got - hand).max()
    assert np.abs(got - plain).max() > 100 * np.abs(got - hand).max()  # the preparation matters here
    other = by_hand(cfg, 2, index)  # another epoch's draws (another crop): clearly another output
    with paddle.no_grad():
        assert np.abs(model.Teacher(paddle.to_tensor(other.astype(np.float32))).numpy() - got).max() > 1e-3


def test_bicubic_and_nearest_resize_like_opencv_and_same_normalisation_keeps_the_pixels():
    from ppssld.teacher.inputs import Normalization, TeacherInput, parse_input

    student = Normalization(1 / 255.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    views = ((pixels / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    for mode, flag in (("bicubic", cv2.INTER_CUBIC), ("nearest", cv2.INTER_NEAREST)):
        prepare = TeacherInput(parse_input({"size": 40, "interpolation": mode}, "x"), student, "x")
        want = np.stack([cv2.resize(p, (40, 40), interpolation=flag) for p in pixels])
        want = ((want / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(prepare.numpy(views), want, atol=2e-5)
    same = TeacherInput(parse_input({}, "x"), student, "x")
    assert not same.affine and np.array_equal(same.numpy(views), views)  # nothing to do: the batch as given


def test_the_engine_runs_at_the_teachers_input_shape(setup):
    cfg, _ = setup
    auto = copy.deepcopy(cfg)
    auto["Arch"].pop("teacher_engine")
    engine_model, dygraph_model = build_full_model(auto), build_full_model(cfg)
    assert isinstance(engine_model.Teacher, EngineTeacher)
    batch = paddle.to_tensor(views_of(cfg, STUDENT_OPS, 1, range(6)))
    a, b = engine_model(batch)["Teacher"].numpy(), dygraph_model(batch)["Teacher"].numpy()
    assert list(engine_model.Teacher.engine.predictors) == [(3, SIZE, SIZE)]
    assert softmax_gap(a, b) <= 1e-4


def test_mining_and_the_cache_score_with_the_teachers_own_input(setup):
    cfg, tmp = setup
    teacher = teacher_from_config(cfg)  # mining: eval views (32x32, same normalisation here)
    assert teacher.prepare is not None and f"input {SIZE}x{SIZE}" in teacher.description
    views = views_of(cfg, STUDENT_OPS, 1, range(8))
    model = build_full_model(cfg)
    with paddle.no_grad():
        hand = model.Teacher(paddle.to_tensor(by_hand(cfg, 1, range(8)).astype(np.float32)))
        want = paddle.nn.functional.softmax(hand).numpy()
    assert np.abs(teacher(views)[0] - want).max() < 1e-5
    generate(cfg, str(tmp / "cache"), views=1, topk=4, chunk_size=16, prob_dtype="float32")
    manifest = read_manifest(str(tmp / "cache"))
    assert manifest["teacher_inputs"]["Teacher"]["size"] == [SIZE, SIZE]
    assert manifest["teacher_inputs"]["Teacher"]["teacher"]["mean"] == MEAN
    assert manifest["teacher_inputs"]["Teacher"]["student"]["std"] == [0.5, 0.5, 0.5]
    cached = SoftLabelCache(str(tmp / "cache")).teacher_output(0, np.arange(8))  # view 0 = epoch 1's draws
    assert np.abs(cached - model(paddle.to_tensor(views))["Teacher"].numpy()).max() < 1e-4
    other = copy.deepcopy(cfg)
    other["Arch"]["models"][0]["Teacher"]["input"]["size"] = [40, 40]
    other["Global"]["soft_label_cache"] = str(tmp / "cache")
    with pytest.raises(ConfigError, match="stale: it was built with other teacher_arch, teacher_inputs"):
        build_trainer(other)
    with pytest.raises(ConfigError, match="holds \\(part of\\) another cache"):  # generation refuses it too
        generate(other, str(tmp / "cache"), views=1, topk=4, chunk_size=16, prob_dtype="float32")


@pytest.mark.parametrize("change, message", [
    ({"sise": [48, 48]}, "unknown key Arch.models\\[0\\].Teacher.input.sise. Did you mean 'size'"),
    ({"interpolation": "lanczos"}, "Teacher.input.interpolation must be one of bilinear, bicubic, nearest"),
    ({"std": [0.2, 0.0, 0.2]}, "Teacher.input.std must be 3 numbers > 0"),
    ({"size": [48]}, "Teacher.input.size must be \\[height, width\\]"),
    ({"allow_upsample": "yes"}, "Teacher.input.allow_upsample must be true or false"),
])
def test_bad_input_values_are_refused_naming_the_key(setup, change, message):
    cfg, _ = setup
    cfg["Arch"]["models"][0]["Teacher"]["input"].update(change)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_upsampling_beyond_2x_needs_allow_upsample_and_other_refusals(setup):
    cfg, _ = setup
    cfg["Arch"]["models"][0]["Teacher"]["input"]["size"] = [72, 64]  # 2.25x the 32x32 views
    model = build_full_model(cfg)
    batch = paddle.to_tensor(views_of(cfg, STUDENT_OPS, 1, range(2)))
    with pytest.raises(ConfigError, match=r"Arch.models\[0\].Teacher.input.size \[72, 64\] upsamples the student's "
                                          r"32x32 views 2.25x per side \(more than 2x\).*allow_upsample: true"):
        model(batch)
    cfg["Arch"]["models"][0]["Teacher"]["input"]["allow_upsample"] = True
    assert build_full_model(cfg)(batch)["Teacher"].shape == [2, 4]
    student = copy.deepcopy(cfg)
    student["Arch"]["models"][1]["Student"]["input"] = {"size": 48}
    with pytest.raises(ConfigError, match=r"Arch.models\[1\].Student.input: only a frozen teacher"):
        validate(student)
    eval_differs = copy.deepcopy(cfg)
    eval_differs["DataLoader"]["Eval"]["dataset"]["transform_ops"][2]["NormalizeImage"]["mean"] = MEAN
    with pytest.raises(ConfigError, match="DataLoader.Train.dataset.transform_ops and DataLoader.Eval.dataset."
                                          "transform_ops normalise differently"):
        validate(eval_differs)
    no_norm = copy.deepcopy(cfg)
    del no_norm["DataLoader"]["Train"]["dataset"]["transform_ops"][3]
    with pytest.raises(ConfigError, match="has 0 NormalizeImage ops"):
        validate(no_norm)


def test_a_model_built_without_the_data_config_refuses_to_feed_the_teacher_the_wrong_input(setup):
    from ppssld.arch.build import build_model

    cfg, _ = setup
    model = build_model(cfg["Arch"])
    with pytest.raises(ConfigError, match="Arch.models.Teacher.input is set but this model was built without"):
        model(paddle.zeros([1, 3, 32, 32]))
