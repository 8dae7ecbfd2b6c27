"""Every transform op on a tiny image against an expected result."""
import random
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ppssld.data.transforms import (ImageDecodeError, build_transforms, decode_image, parse_number,
                                    validate_transforms)
from ppssld.utils.errors import ConfigError, DataError


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _rgb_image(h=12, w=16, seed=0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _op(name, **params):
    return build_transforms([{name: params or None}])


def test_decode_colour_order_gray_and_rgba():
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR
    assert decode_image(_png(bgr))[0, 0].tolist() == [255, 0, 0]
    assert _op("DecodeImage", to_rgb=False)(_png(bgr))[0, 0].tolist() == [0, 0, 255]
    chw = _op("DecodeImage", channel_first=True)(_png(bgr))
    assert chw.shape == (3, 4, 5) and chw[:, 0, 0].tolist() == [255, 0, 0]
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    out = _op("DecodeImage")(_png(gray))
    assert out.shape == (4, 5, 3) and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    bgra = np.dstack([bgr, np.full((4, 5), 128, np.uint8)])
    out = _op("DecodeImage", backend="pil")(_png(bgra))
    assert out.shape == (4, 5, 3) and out[0, 0].tolist() == [255, 0, 0]


def test_decode_errors():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        decode_image(b"this is not an image at all")
    with pytest.raises(ImageDecodeError):
        decode_image(_png(_rgb_image())[:40])


def test_resize_short_and_size():
    img = _rgb_image(20, 40)
    assert _op("ResizeImage", resize_short=10)(img).shape == (10, 20, 3)
    assert _op("ResizeImage", size=[12, 6])(img).shape == (6, 12, 3)  # PaddleClas: [width, height]
    assert _op("ResizeImage", size=8, backend="pil", interpolation="bicubic")(img).shape == (8, 8, 3)
    checker = np.kron(np.array([[0, 255], [255, 0]], np.uint8), np.ones((4, 4), np.uint8))
    nearest = _op("ResizeImage", size=4, interpolation="nearest")(np.dstack([checker] * 3))
    assert set(np.unique(nearest)) <= {0, 255}
    with pytest.raises(ConfigError, match="interpolation 'cubicle'"):
        _op("ResizeImage", size=4, interpolation="cubicle")
    with pytest.raises(ConfigError, match="size or resize_short"):
        _op("ResizeImage")


def test_rand_crop_shape_determinism_and_full_crop():
    img = _rgb_image(24, 24)
    op = _op("RandCropImage", size=8)
    a = op(img, random.Random(3))
    assert a.shape == (8, 8, 3) and a.dtype == np.uint8
    assert np.array_equal(a, op(img, random.Random(3)))
    assert any(not np.array_equal(a, op(img, random.Random(s))) for s in range(4, 10))
    full = _op("RandCropImage", size=[10, 6], scale=[1.0, 1.0], ratio=[1.0, 1.0])(img, random.Random(0))
    assert np.array_equal(full, cv2.resize(img, (10, 6), interpolation=cv2.INTER_LINEAR))
    # progress_size (progressive training's per-stage sizes) is kept for the stages; the op resizes to size
    staged = _op("RandCropImage", size=8, progress_size=[4, [6, 5]])
    assert staged.ops[0][1].progress_size == [(4, 4), (6, 5)] and np.array_equal(staged(img, random.Random(3)), a)
    with pytest.raises(ConfigError, match="progress_size must be a non-empty list"):
        _op("RandCropImage", size=8, progress_size=4)


@pytest.mark.parametrize("code, flip", [(1, lambda x: x[:, ::-1]), (0, lambda x: x[::-1]),
                                        (-1, lambda x: x[::-1, ::-1])])
def test_rand_flip(code, flip):
    img = _rgb_image(5, 7)
    op = _op("RandFlipImage", flip_code=code)
    outs = [op(img, random.Random(s)) for s in range(20)]
    flipped = sum(np.array_equal(o, flip(img)) for o in outs)
    same = sum(np.array_equal(o, img) for o in outs)
    assert flipped + same == 20 and flipped > 0 and same > 0
    with pytest.raises(ConfigError, match="flip_code"):
        _op("RandFlipImage", flip_code=2)


def test_center_crop():
    img = _rgb_image(10, 12)
    assert np.array_equal(_op("CropImage", size=4)(img), img[3:7, 4:8])
    assert np.array_equal(_op("CropImage", size=[6, 2])(img), img[4:6, 3:9])
    with pytest.raises(DataError, match="smaller than the crop"):
        _op("CropImage", size=16)(img)


def test_normalize_values_layout_and_dtype():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0] = 255
    out = _op("NormalizeImage", scale="1.0/255.0", mean=[0.5] * 3, std=[0.5] * 3, order="")(img)
    assert out.dtype == np.float32 and out.shape == (2, 3, 3)
    assert np.allclose(out[0], 1.0) and np.allclose(out[1], -1.0)
    chw = build_transforms([{"ToCHWImage": None}, {"NormalizeImage": {"mean": [0, 0, 0], "std": [1, 1, 1],
                                                                      "order": "chw", "output_fp16": True}}])(img)
    assert chw.dtype == np.float16 and chw.shape == (3, 2, 3) and np.allclose(chw[:, 0], 1.0)
    four = _op("NormalizeImage", order="hwc", channel_num=4)(img)
    assert four.shape == (2, 3, 4) and np.all(four[..., 3] == 0)
    with pytest.raises(ConfigError, match="expects a CHW image but gets HWC"):
        _op("NormalizeImage", order="chw")


def test_parse_number_is_safe():
    assert parse_number("1.0/255.0") == pytest.approx(1 / 255)
    assert parse_number("1/255") == pytest.approx(1 / 255)
    assert parse_number("0.5") == 0.5 and parse_number(2) == 2.0 and parse_number("1e-3") == 0.001
    for bad in ("__import__('os').getcwd()", "1/0", "2**8", True, None):
        with pytest.raises(ConfigError):
            parse_number(bad)


def test_to_chw():
    img = _rgb_image(4, 6)
    out = _op("ToCHWImage")(img)
    assert out.shape == (3, 4, 6) and np.array_equal(out[1], img[..., 1])


@pytest.mark.parametrize("name, params", [("AutoAugment", {}), ("RandAugment", {"num_layers": 2, "magnitude": 9})])
def test_policies_deterministic_with_seed(name, params):
    img = _rgb_image(16, 16, seed=1)
    op = _op(name, **params)
    outs = [op(img, random.Random(s)) for s in range(12)]
    for out in outs:
        assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(outs[0], op(img, random.Random(0)))
    assert sum(not np.array_equal(o, img) for o in outs) >= 6
    assert len({o.tobytes() for o in outs}) >= 4


def test_randaugment_zero_layers_is_identity():
    img = _rgb_image(8, 8)
    assert np.array_equal(_op("RandAugment", num_layers=0)(img, random.Random(0)), img)


def test_paddleclas_eval_chain_on_bytes_and_array():
    ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"resize_short": 12}},
           {"CropImage": {"size": 10}},
           {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                               "order": ""}}, {"ToCHWImage": None}]
    bgr = _rgb_image(24, 30)
    out = build_transforms(ops)(_png(bgr))
    assert out.shape == (3, 10, 10) and out.dtype == np.float32
    assert -2.2 < out.min() and out.max() < 2.7
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    assert np.allclose(build_transforms(ops[1:])(rgb), out)


def test_config_errors_name_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'RandCropImage'"):
        validate_transforms([{"RandCropImg": {"size": 8}}], "DataLoader.Train.dataset.transform_ops")
    with pytest.raises(ConfigError, match="resize_short") as err:
        validate_transforms([{"ResizeImage": {"resize_shrt": 8}}])
    assert "transform_ops[0]" in str(err.value)
    with pytest.raises(ConfigError, match="'RandomRotation' is not implemented"):
        validate_transforms([{"RandomRotation": {"degrees": 10}}])
    with pytest.raises(ConfigError, match="DecodeImage must be the first"):
        validate_transforms([{"ToCHWImage": None}, {"DecodeImage": None}])
    with pytest.raises(ConfigError, match="put ToCHWImage last"):
        validate_transforms([{"ToCHWImage": None}, {"CropImage": {"size": 2}}])
    with pytest.raises(ConfigError, match=r"transform_ops\[1\].AutoAugment works on uint8 images"):
        validate_transforms([{"NormalizeImage": {"order": ""}}, {"AutoAugment": None}])
    with pytest.raises(ConfigError, match=r"transform_ops\[1\].RandFlipImage: flip_code"):
        validate_transforms([{"DecodeImage": None}, {"RandFlipImage": {"flip_code": 5}}])


def test_transforms_module_does_not_import_paddle():
    code = "import sys, ppssld.data.transforms; print('paddle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
