"""EfficientNetV2's ops without a PaddleClas checkout: RandAugmentV2 (draws, levels, checks) and CropImageAtRatio."""
import random

import cv2
import numpy as np
import pytest
from PIL import Image

from ppssld.data.transforms import build_transforms
from ppssld.data.transforms.randaugment_v2 import OPS, RandAugmentV2, apply_v2, levels
from ppssld.export.infer_config import image_shape
from ppssld.utils.errors import ConfigError


def _img(h=20, w=30, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), np.uint8)


def test_levels_at_the_last_stage_magnitude_15():
    lv = levels(15)  # a = 1.5: beyond RandAugment's top level 10
    assert lv["translateX"] == pytest.approx(150.0) and lv["rotate"] == pytest.approx(45.0)
    assert lv["color"] == pytest.approx(2.8) and lv["posterize"] == 6 and lv["solarize"] == 384
    assert lv["solarize_add"] == 165 and lv["cutout"] == 60


@pytest.mark.parametrize("sign", [1, -1])
def test_translate_moves_by_pixels_not_a_fraction(sign):
    img = _img(6, 40)
    got = np.asarray(apply_v2(Image.fromarray(img), "translateX", levels(1)["translateX"], sign, (7, 7, 7)))
    ref = np.full_like(img, 7)  # magnitude 1: 10 pixels whatever the width
    if sign == 1:
        ref[:, :30] = img[:, 10:]
    else:
        ref[:, 10:] = img[:, :30]
    assert np.array_equal(got, ref)


def test_solarize_add_and_cutout_equal_numpy():
    img = _img()
    got = np.asarray(apply_v2(Image.fromarray(img), "solarize_add", 50, 1, (0, 0, 0)))
    assert np.array_equal(got, np.where(img < 128, np.minimum(255, img.astype(int) + 50), img).astype(np.uint8))
    cut = np.asarray(apply_v2(Image.fromarray(img), "cutout", 4, 1, (1, 2, 3), centre=(2, 25)))
    ref = img.copy()
    ref[0:6, 21:29] = (1, 2, 3)
    assert np.array_equal(cut, ref)


def test_draws_are_uniform_seeded_and_checked():
    op = RandAugmentV2(num_layers=2, magnitude=15)
    counts = {name: 0 for name in OPS}
    rng = random.Random(0)
    for _ in range(1600):
        for name, sign, centre in op.plan((30, 20), rng):
            counts[name] += 1
            assert sign in (-1, 1) and (centre is None) == (name != "cutout")
    assert min(counts.values()) > 140 and max(counts.values()) < 260  # 200 expected each
    img = _img()
    assert np.array_equal(op(img, random.Random(5)), op(img, random.Random(5)))
    assert any(not np.array_equal(op(img, random.Random(5)), op(img, random.Random(s))) for s in range(6, 10))
    with pytest.raises(ConfigError, match=r"magnitude must lie in \[0, 20\]"):
        RandAugmentV2(magnitude=21)
    with pytest.raises(ConfigError, match="progress_magnitude must be a non-empty list"):
        RandAugmentV2(progress_magnitude=[])
    with pytest.raises(ConfigError, match="fillcolor must be an int or 3 ints"):
        RandAugmentV2(fillcolor=(1, 2))
    with pytest.raises(ConfigError, match="RandAugmentV2 works on uint8 images"):
        build_transforms([{"NormalizeImage": {"order": ""}}, {"RandAugmentV2": None}])


def test_crop_image_at_ratio_is_the_centre_square_resized():
    img = _img(50, 70)
    got = build_transforms([{"CropImageAtRatio": {"size": 16, "pad": 4}}])(img)
    side = int(16 / 20 * 50)  # 40 of the short side 50
    ref = cv2.resize(img[5:45, 15:55], (16, 16), interpolation=cv2.INTER_LINEAR)
    assert side == 40 and np.array_equal(got, ref)
    with pytest.raises(ConfigError, match="pad must be an int >= 0"):
        build_transforms([{"CropImageAtRatio": {"size": 16, "pad": -1}}])
    with pytest.raises(ConfigError, match="interpolation 'random' is not valid for CropImageAtRatio"):
        build_transforms([{"CropImageAtRatio": {"size": 16, "pad": 0, "interpolation": "random"}}])
    ops = [{"DecodeImage": {}}, {"CropImageAtRatio": {"size": 384, "pad": 32}}, {"NormalizeImage": {}}]
    assert image_shape({"Global": {}}, ops) == [3, 384, 384]  # export reads the size from the crop
