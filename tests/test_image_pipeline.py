"""One image pipeline: dataset, mining, pre-flight check, inference.yml and predictor make the same array.

PaddleClas-style transform lists end in ``NormalizeImage`` (order '') without ``ToCHWImage``: the
dataset transposes HWC to CHW itself, and every other consumer must do the same.
"""
import os
import types

import cv2
import numpy as np
import paddle
import pytest

from ppssld.data.check import check_dataset, datasets_from_config
from ppssld.data.datasets.imagenet import ImageNetDataset
from ppssld.data.image import decode_file, load_and_transform, read_bytes, transform_image
from ppssld.data.transforms import ImageDecodeError, build_transforms
from ppssld.export.infer_config import (build_infer_config, preprocessor, read_infer_config, transform_ops,
                                        write_infer_config)
from ppssld.export.runtime import Predictor
from ppssld.mining.score import load_scores, score_pool
from ppssld.teacher.frozen import Teacher
from ppssld.utils.errors import ConfigError

NORM = {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "order": ""}}
PADDLECLAS_OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
                  {"ResizeImage": {"resize_short": 20}}, {"CropImage": {"size": 16}}, NORM]
WITH_TOCHW = PADDLECLAS_OPS + [{"ToCHWImage": None}]


@pytest.fixture()
def images(tmp_path):
    """Six non-square colour PNG/JPEG images with distinct content; returns (root, relative paths)."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.RandomState(3)
    names = []
    for i in range(6):
        name = f"img{i}." + ("png" if i % 2 else "jpg")
        img = rng.randint(0, 255, (24 + i, 30, 3), np.uint8)
        img[:, : 10 + i, i % 3] = 250  # channels differ, so an HWC/CHW mix-up changes the numbers
        cv2.imwrite(str(root / name), img)
        names.append(name)
    return str(root), names


def _teacher() -> Teacher:
    paddle.seed(0)
    layer = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU(), paddle.nn.AdaptiveAvgPool2D(1),
                                 paddle.nn.Flatten(), paddle.nn.Linear(4, 5))
    return Teacher(layer, "tiny")


def test_one_function_makes_the_dataset_array(images, tmp_path):
    root, names = images
    listing = tmp_path / "l.txt"
    listing.write_text("".join(f"{n} {i % 2}\n" for i, n in enumerate(names)))
    ds = ImageNetDataset(root, str(listing), PADDLECLAS_OPS)
    chain = build_transforms(PADDLECLAS_OPS)
    for i, name in enumerate(names):
        path = os.path.join(root, name)
        arr = load_and_transform(path, chain)
        assert arr.shape == (3, 16, 16) and arr.dtype == np.float32 and arr.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(arr, ds.load(i))
        np.testing.assert_array_equal(transform_image(decode_file(path, chain), chain), arr)
        np.testing.assert_array_equal(load_and_transform(path, build_transforms(WITH_TOCHW)), arr)
    with pytest.raises(ImageDecodeError, match="cannot read"):
        read_bytes(os.path.join(root, "missing.png"))


def test_mining_with_paddleclas_transforms_scores_like_with_to_chw(images, tmp_path):
    root, names = images
    teacher = _teacher()
    scores = {}
    for tag, ops in (("hwc", PADDLECLAS_OPS), ("chw", WITH_TOCHW)):
        out = str(tmp_path / tag)
        score_pool(teacher, names, root, build_transforms(ops), out, topn=5, batch_size=4, chunk_size=4,
                   features=True, prefetch=False)
        scores[tag] = load_scores(out)
    assert scores["hwc"].ok.all()
    np.testing.assert_array_equal(scores["hwc"].prob, scores["chw"].prob)
    np.testing.assert_array_equal(scores["hwc"].feature, scores["chw"].feature)
    # and they are the teacher's probabilities on exactly what the dataset feeds the network
    chain = build_transforms(PADDLECLAS_OPS)
    batch = np.stack([load_and_transform(os.path.join(root, n), chain) for n in names])
    probs, _ = teacher(batch)
    np.testing.assert_allclose(scores["hwc"].prob, -np.sort(-probs, axis=1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("decode", [{"to_rgb": True}, {"to_rgb": False, "backend": "pil"}])
def test_inference_yml_and_predictor_give_the_dataset_array(images, tmp_path, decode):
    root, names = images
    ops = [{"DecodeImage": decode}] + PADDLECLAS_OPS[1:]
    config = {"DataLoader": {"Eval": {"dataset": {"transform_ops": ops}}}}
    exported = transform_ops(config)
    assert exported[-1] == {"ToCHWImage": None}
    path = str(tmp_path / "inference.yml")
    write_infer_config(path, build_infer_config("m", "tiny", exported, [3, 16, 16], None, 5, 5))
    chain = preprocessor(read_infer_config(path))
    fake_predictor = types.SimpleNamespace(transform=chain)  # Predictor.preprocess needs only the chain
    listing = tmp_path / "l.txt"
    listing.write_text("".join(f"{n}\n" for n in names))
    ds = ImageNetDataset(root, str(listing), ops)
    for i, name in enumerate(names):
        data = read_bytes(os.path.join(root, name))
        np.testing.assert_array_equal(Predictor.preprocess(fake_predictor, data), ds.load(i))


def test_check_runs_the_dataset_transforms(images, tmp_path):
    root, names = images
    listing = tmp_path / "l.txt"
    listing.write_text(f"{names[0]} 0\n{names[1]} 1\n{names[1]} 1\n")
    too_big = [{"DecodeImage": None}, {"CropImage": {"size": 28}}, NORM]
    report = check_dataset(root, str(listing), workers=1, transform_ops=too_big)
    assert report["repeated"] == 1 and report["images"] == 3
    assert len(report["problems"]) == 2 and all("the transforms fail on it: CropImage" in p
                                                for p in report["problems"])
    assert check_dataset(root, str(listing), workers=2, transform_ops=PADDLECLAS_OPS)["problems"] == []
    config = {"DataLoader": {"Eval": {"dataset": {"image_root": root, "cls_label_path": str(listing),
                                                  "transform_ops": too_big}}}}
    (where, keys), = datasets_from_config(config)
    assert where == "DataLoader.Eval.dataset" and keys["transform_ops"] == too_big
    config["DataLoader"]["Eval"]["dataset"]["transform_ops"] = [{"DecodeImage": None}, {"Resize": {"size": 8}}]
    with pytest.raises(ConfigError, match=r"DataLoader\.Eval\.dataset\.transform_ops\[1\]: PaddleClas op 'Resize'"):
        datasets_from_config(config)
