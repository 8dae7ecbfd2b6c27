"""The bad-input corpus: each mistake gives one clear ppssld error naming the file and line or the config key."""
import io
import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from ppssld.arch.build import build_model
from ppssld.utils.config import load_config
from ppssld.data.datasets.imagenet import ImageNetDataset
from ppssld.data.lists.label_list import read_label_list
from ppssld.data.transforms import ImageDecodeError, decode_image
from ppssld.utils.errors import ConfigError, DataError, WeightsError
from tests.conftest import ROOT, save_random_backbone, write_images

CONFIG = os.path.join(ROOT, "ppcls_configs", "quick_start", "fashion_mnist", "teacher_ResNet18.yaml")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("Global:\n  epochs: 3\n  device: cpu\n Arch: {name: ResNet18\n")
    with pytest.raises(ConfigError, match=rf"{path}:4:\d+: not valid YAML"):
        load_config(str(path))


@pytest.mark.parametrize("override, key", [("Global.epochs=abc", "Global.epochs"),
                                           ("Global.epochs=0", "Global.epochs"),
                                           ("Global.seed=1.5", "Global.seed"),
                                           ("Global.image_shape=[3,32]", "Global.image_shape"),
                                           ("Global.eval_during_train=maybe", "Global.eval_during_train")])
def test_wrong_types_through_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"{key} must be .*got"):
        load_config(CONFIG, [override])


@pytest.mark.parametrize("backbone, classes, needle", [("ResNet34", 4, "unexpected"), ("ResNet18", 10, "shape")])
def test_teacher_of_another_architecture_or_class_count(tmp_path, backbone, classes, needle):
    path = save_random_backbone(str(tmp_path / "t.pdparams"), name=backbone, class_num=classes)
    arch = {"name": "DistillationModel", "freeze_params_list": [True, False], "infer_model_name": "Student",
            "models": [{"Teacher": {"name": "ResNet18", "class_num": 4, "pretrained": path}},
                       {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 4}}]}
    with pytest.raises(WeightsError) as info:
        build_model(arch)
    text = str(info.value)
    assert needle in text and "t.pdparams" in text
    if needle == "shape":  # the key and both shapes are named
        assert "fc.weight" in text and "10" in text and "4" in text


def test_empty_eval_list(tmp_path):
    paths = write_images(str(tmp_path), 4, 2)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.txt.*empty"):
        ImageNetDataset(str(tmp_path), str(empty), [{"DecodeImage": None}])
    assert read_label_list(paths["val_list.txt"])


def _encode(array, ext, **params):
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


def _paddleclas_decode(data):
    """The reference: PaddleClas's DecodeImage (ppcls/data/preprocess/ops/operators.py, cv2 backend, to_rgb)
    is ``cv2.imdecode(bytes, 1)`` (IMREAD_COLOR) then a BGR -> RGB flip."""
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), 1)[:, :, ::-1]


def _images():
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (9, 11, 3), np.uint8)
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    rgba = io.BytesIO()
    Image.fromarray(np.dstack([rgb, rng.randint(0, 256, (9, 11), np.uint8)]), "RGBA").save(rgba, format="PNG")
    return {"grey": _encode(rgb[:, :, 0], ".png"),
            "rgba": rgba.getvalue(),
            "16bit": _encode((rng.randint(0, 65536, (9, 11, 3))).astype(np.uint16), ".png"),
            "16bit_grey": _encode((rng.randint(0, 65536, (9, 11))).astype(np.uint16), ".png"),
            "cmyk": cmyk.getvalue()}


@pytest.mark.parametrize("kind", ["grey", "rgba", "16bit", "16bit_grey", "cmyk"])
def test_image_kinds_decode_as_paddleclas_does(kind):
    data = _images()[kind]
    ours = decode_image(data)
    theirs = _paddleclas_decode(data)
    assert ours.shape == theirs.shape == (9, 11, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, theirs)


def _png_header_only(width, height):
    """A PNG whose header claims ``width`` x ``height`` (the pixel data is a few bytes: never decodable)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_huge_image_is_refused_from_its_header(tmp_path, monkeypatch):
    with pytest.raises(ImageDecodeError, match=r"12000x10000 = 120 megapixels, more than"):
        decode_image(_png_header_only(12000, 10000))
    data = _png_header_only(20000, 10000)  # 200 megapixels: 600 MB once decoded
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("the pixels were decoded"))
    start = time.monotonic()
    with pytest.raises(ImageDecodeError, match=r"200 megapixels, more than the 100 megapixel limit"):
        decode_image(data)
    assert time.monotonic() - start < 1
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.png").write_bytes(data)
    (tmp_path / "list.txt").write_text("big.png 0\n")
    ds = ImageNetDataset(str(root), str(tmp_path / "list.txt"), [{"DecodeImage": None}])
    with pytest.raises(DataError, match=r"big\.png \(listed at .*list\.txt:1\).*megapixel"):
        ds[0]


def test_lists_with_crlf_bom_and_non_utf8(tmp_path):
    (tmp_path / "crlf.txt").write_bytes(b"a.png 0\r\nb c.png 1\r\n\r\n")
    assert [(r.path, r.label, r.line) for r in read_label_list(str(tmp_path / "crlf.txt"))] == \
        [("a.png", 0, 1), ("b c.png", 1, 2)]
    (tmp_path / "bom.txt").write_bytes("\ufeffa.png 0\nb.png 1\n".encode("utf-8"))
    assert [r.path for r in read_label_list(str(tmp_path / "bom.txt"))] == ["a.png", "b.png"]
    (tmp_path / "latin1.txt").write_bytes(b"a.png 0\ncaf\xe9.png 1\n")
    with pytest.raises(DataError, match=r"latin1\.txt:2: line is not valid UTF-8"):
        read_label_list(str(tmp_path / "latin1.txt"))
