"""CustomLabelDataset and its label-making ops (RandomRot90, BlurImage), against PaddleClas's definitions."""
import random

import cv2
import numpy as np
import pytest

from ppssld.data.datasets.custom_label import BlurImage, RandomRot90
from ppssld.data.datasets.imagenet import build_dataset
from ppssld.data.transforms import build_transforms
from ppssld.utils.errors import ConfigError, DataError

NORM = {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0, 0, 0], "std": [1, 1, 1], "order": ""}}


def image(h=6, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_random_rot90_label_is_the_rotation():
    img = image()
    for seed in range(12):
        out, k = RandomRot90().apply(img, random.Random(seed))
        assert k == random.Random(seed).choice([0, 1, 2, 3])
        np.testing.assert_array_equal(out, np.rot90(img, k))
    assert RandomRot90()(img, random.Random(3)).shape in ((6, 9, 3), (9, 6, 3))


def paddleclas_blur(img, rng, ratio=0.5, max_m=12, max_angle=45, max_g=12):
    """PaddleClas BlurImage.__call__, with its random draws taken from ``rng`` in the same order."""
    if rng.random() > ratio:
        return img, 0
    if rng.choice(["gaussian", "motion"]) == "gaussian":
        ks = (rng.choice(list(range(5, max_g, 2))), rng.choice(list(range(5, max_g, 2))))
        return cv2.GaussianBlur(img, ks, 0), 1
    degree = rng.choice(list(range(5, max_m, 2)))
    angle = rng.choice(list(range(-max_angle, max_angle)))
    m = cv2.getRotationMatrix2D((degree / 2, degree / 2), angle, 1)
    kernel = cv2.warpAffine(np.diag(np.ones(degree)), m, (degree, degree)) / degree
    blurred = cv2.filter2D(img, -1, kernel)
    cv2.normalize(blurred, blurred, 0, 255, cv2.NORM_MINMAX)
    return np.array(blurred, dtype=np.uint8), 1


def test_blur_image_matches_paddleclas_and_labels():
    img = image(20, 24, seed=1)
    op = BlurImage()
    labels = set()
    for seed in range(16):
        out, label = op.apply(img, random.Random(seed))
        ref, ref_label = paddleclas_blur(img, random.Random(seed))
        assert label == ref_label
        np.testing.assert_array_equal(out, ref)
        labels.add(label)
        if label == 0:
            assert out is img
    assert labels == {0, 1}
    assert all(BlurImage(ratio=0.0).apply(img, random.Random(s))[1] == 0 for s in range(5))
    assert all(BlurImage(ratio=1.0).apply(img, random.Random(s))[1] == 1 for s in range(5))
    with pytest.raises(ConfigError, match="gaussian_max_ksize must be an int >= 6"):
        build_transforms([{"BlurImage": {"gaussian_max_ksize": 3}}])


def make(tmp_path, n=8):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(n):
        cv2.imwrite(str(root / f"{i}.png"), image(6, 9, seed=i))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{i}.png\textra\n" for i in range(n)))
    return str(root), str(lst)


def test_custom_label_dataset_labels_and_repeatability(tmp_path):
    root, lst = make(tmp_path)
    cfg = {"name": "CustomLabelDataset", "image_root": root, "sample_list_path": lst, "delimiter": "\t",
           "label_key": "random_rot90_orientation",
           "transform_ops": [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, NORM, {"RandomRot90": None}]}
    ds = build_dataset(cfg)
    ds.set_seed(7)
    labels = []
    for i in range(len(ds)):
        img, label = ds[i]
        original = cv2.cvtColor(image(6, 9, seed=i), cv2.COLOR_BGR2RGB) / 255.0
        expected = np.rot90(original, int(label)).transpose(2, 0, 1)
        np.testing.assert_allclose(img, expected, rtol=1e-6)
        labels.append(int(label))
        assert int(ds[i][1]) == int(label)  # same (seed, epoch, index): same label
    assert set(labels) <= {0, 1, 2, 3} and len(set(labels)) > 1
    with pytest.raises(ConfigError, match="label_key 'blur_image': no op of transform_ops makes it; ops here make"):
        build_dataset(dict(cfg, label_key="blur_image"))
    with pytest.raises(ConfigError, match="class_num 2 is smaller than the 4 labels"):
        build_dataset(dict(cfg, class_num=2))
    (tmp_path / "bad.txt").write_text("0.png\nmissing.png\n")
    with pytest.raises(DataError, match=r"bad.txt:2: image .*missing.png"):
        build_dataset(dict(cfg, sample_list_path=str(tmp_path / "bad.txt")))


def test_label_ops_only_augment_elsewhere(tmp_path):
    """In an ImageNetDataset chain the op augments and its label is dropped (PaddleClas's format_data)."""
    root, _ = make(tmp_path, 2)
    lst = tmp_path / "l.txt"
    lst.write_text("0.png 1\n1.png 0\n")
    ds = build_dataset({"name": "ImageNetDataset", "image_root": root, "cls_label_path": str(lst),
                        "transform_ops": [{"DecodeImage": None}, {"BlurImage": {"ratio": 1.0}}, NORM]})
    img, label = ds[0]
    assert int(label) == 1 and img.shape == (3, 6, 9)
