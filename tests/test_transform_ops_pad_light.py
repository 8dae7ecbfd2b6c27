"""Padv2, RandomCropImage, PCALighting, RandAugmentV3: numpy references and seeded properties."""
import random

import numpy as np
import pytest
from PIL import Image

from ppssld.data.transforms.pad import Padv2, RandomCropImage
from ppssld.data.transforms.pca_lighting import EIGVAL, EIGVEC, PCALighting
from ppssld.data.transforms.randaugment_v3 import OPS, RandAugmentV3, apply_v3, levels
from ppssld.data.transforms import build_transforms
from ppssld.utils.errors import ConfigError, DataError


def _img(h=20, w=30, seed=0):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


# ---------------- Padv2 / RandomCropImage

@pytest.mark.parametrize("mode,offsets,where", [(0, None, (0, 0)), (1, None, (3, 5)), (2, None, (6, 10)),
                                                (-1, [4, 2], (2, 4))])
def test_padv2_places_the_image_like_numpy_pad(mode, offsets, where):
    img = _img()
    out = Padv2(size=[40, 26], pad_mode=mode, offsets=offsets, fill_value=[1, 2, 3])(img)
    top, left = where
    ref = np.stack([np.pad(img[:, :, c].astype(np.float32), ((top, 26 - 20 - top), (left, 40 - 30 - left)),
                           constant_values=c + 1) for c in range(3)], axis=2)
    assert out.dtype == np.float32 and out.shape == (26, 40, 3)
    assert np.array_equal(out, ref)


def test_padv2_divisor_same_size_and_errors():
    img = _img(20, 30)
    assert Padv2(size=None, size_divisor=16)(img).shape == (32, 32, 3)
    same = Padv2(size=[30, 20])(img)
    assert same.dtype == np.float32 and np.array_equal(same, img)
    with pytest.raises(DataError, match="larger than the padded size 25x25"):
        Padv2(size=25)(img)
    with pytest.raises(ConfigError, match="give offsets"):
        Padv2(size=40, pad_mode=-1)
    with pytest.raises(ConfigError, match=r"transform_ops\[0\].Padv2: pad_mode must be"):
        build_transforms([{"Padv2": {"size": 40, "pad_mode": 3}}])


def test_random_crop_image_is_a_window_drawn_from_the_rng():
    img = _img(26, 40)
    out = RandomCropImage(size=[30, 20])(img, random.Random(7))
    draw = random.Random(7)
    top, left = draw.randint(0, 6), draw.randint(0, 10)
    assert np.array_equal(out, img[top:top + 20, left:left + 30])
    with pytest.raises(DataError, match="smaller than the crop"):
        RandomCropImage(size=50)(img)


def test_pulc_attribute_chain_builds_and_runs():
    chain = build_transforms([{"ResizeImage": {"size": [24, 32]}}, {"Padv2": {"size": [34, 42], "pad_mode": 1,
                                                                              "fill_value": 0}},
                              {"RandomCropImage": {"size": [24, 32]}}, {"RandFlipImage": {"flip_code": 1}},
                              {"NormalizeImage": {"scale": "1.0/255.0", "order": ""}}])
    out = chain(_img(50, 60), random.Random(0))
    assert out.shape == (32, 24, 3) and out.dtype == np.float32
    assert np.array_equal(out, chain(_img(50, 60), random.Random(0)))


# ---------------- PCALighting

def test_pca_lighting_equals_numpy_reference():
    img = _img()
    out = PCALighting()(img, random.Random(3))
    draw = random.Random(3)
    alpha = np.array([draw.gauss(0.0, 0.1) for _ in range(3)], dtype=np.float32)
    shift = np.array(EIGVEC, np.float32) @ (alpha * np.array(EIGVAL, np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, img.astype(np.float32) + shift, rtol=0, atol=1e-5)
    assert not np.allclose(out, img)
    assert PCALighting(alphastd=0)(img) is img
    with pytest.raises(ConfigError, match="alphastd must be >= 0"):
        PCALighting(alphastd=-1)


def test_pca_lighting_builds_from_a_null_entry():
    chain = build_transforms([{"PCALighting": None}, {"NormalizeImage": {"order": ""}}])
    assert chain(_img(), random.Random(0)).shape == (20, 30, 3)


# ---------------- RandAugmentV3

def test_randaugment_v3_levels_follow_paddleclas_at_magnitude_3():
    lv = levels(3)
    assert lv["posterize"] == 7 and lv["solarize"] == pytest.approx(178.5) and lv["rotate"] == pytest.approx(9.0)
    assert lv["translateX"] == pytest.approx(150 / 331 * 0.3) and lv["color"] == pytest.approx(0.27)


@pytest.mark.parametrize("name,reference", [
    ("posterize", lambda a: a & np.uint8(0xFF << 1 & 0xFF)),          # magnitude 3: 8 - int(1.2) = 7 bits
    ("solarize", lambda a: np.where(a < 178.5, a, 255 - a).astype(np.uint8)),
    ("invert", lambda a: 255 - a),
])
def test_randaugment_v3_pixel_ops_equal_numpy(name, reference):
    img = _img()
    got = apply_v3(Image.fromarray(img), name, levels(3)[name], 1, Image.BICUBIC, (0, 0, 0))
    assert np.array_equal(np.asarray(got), reference(img))


@pytest.mark.parametrize("sign", [1, -1])
def test_randaugment_v3_translate_x_moves_by_level_times_width(sign):
    img = _img(8, 331)  # magnitude 10: 150/331 of 331 px = 150 px
    got = np.asarray(apply_v3(Image.fromarray(img), "translateX", levels(10)["translateX"], sign,
                              Image.NEAREST, (9, 9, 9)))
    ref = np.full_like(img, 9)
    if sign == 1:  # PIL's affine reads input x + 150: the content moves left
        ref[:, :331 - 150] = img[:, 150:]
    else:
        ref[:, 150:] = img[:, :331 - 150]
    assert np.array_equal(got, ref)


def test_randaugment_v3_draws_ops_uniformly_from_the_rng_and_is_seeded():
    op = RandAugmentV3(num_layers=2, interpolation="bicubic")
    counts = {n: 0 for n in OPS}
    rng = random.Random(0)
    for _ in range(2800):
        for name, sign in op.plan(rng):
            counts[name] += 1
            assert sign in (-1, 1)
    assert min(counts.values()) > 300 and max(counts.values()) < 500  # 400 expected each
    img = _img()
    assert np.array_equal(op(img, random.Random(5)), op(img, random.Random(5)))
    with pytest.raises(ConfigError, match="interpolation must be one of bicubic"):
        RandAugmentV3(interpolation="nearest")
    with pytest.raises(ConfigError, match=r"RandAugmentV3 works on uint8 images: put it before NormalizeImage"):
        build_transforms([{"NormalizeImage": {"order": ""}}, {"RandAugmentV3": None}])
