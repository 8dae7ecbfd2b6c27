"""ImageNetDataset: labeled + unlabeled lists, and every kind of bad input, each with its message."""
import os

import cv2
import numpy as np
import pytest

from ppssld.data.datasets.imagenet import ImageNetDataset, build_dataset, validate_dataset_config
from ppssld.utils.errors import ConfigError, DataError

OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 8}},
       {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0, 0, 0], "std": [1, 1, 1], "order": ""}}]


def make_root(tmp_path, n=6, names=None):
    """``n`` tiny PNGs whose red value is 10 * index; returns the root."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    for i, name in enumerate(names or [f"img{i}.png" for i in range(n)]):
        img = np.zeros((10, 12, 3), np.uint8)
        img[..., 2] = 10 * i  # red (BGR)
        os.makedirs(os.path.dirname(str(root / name)) or str(root), exist_ok=True)
        cv2.imwrite(str(root / name), img)
    return root


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_labeled_unlabeled_counts_and_items(tmp_path):
    root = make_root(tmp_path, names=["a.png", "b.png", "dir with space/c d.png", "u1.png", "u2.png"])
    train = write(tmp_path, "train.txt", "a.png 0\nb.png 1\ndir with space/c d.png 2\nu1.png -1\n")
    unl = write(tmp_path, "unl.txt", "u2.png\n")
    ds = ImageNetDataset(str(root), train, OPS, unlabeled_label_path=[unl], class_num=3)
    assert (len(ds), ds.num_labeled, ds.num_unlabeled) == (5, 3, 2)
    img, label = ds[2]
    assert img.shape == (3, 8, 8) and img.dtype == np.float32 and label.dtype == np.int64 and label == 2
    assert np.allclose(img[0], 20 / 255) and np.allclose(img[1], 0)
    assert [int(ds[i][1]) for i in range(5)] == [0, 1, 2, -1, -1]


def test_list_of_lists_and_paddleclas_dummy_zero(tmp_path):
    root = make_root(tmp_path, n=4)
    first = write(tmp_path, "l1.txt", "img0.png 0\n")
    second = write(tmp_path, "l2.txt", "img1.png 1\n")
    pc_unl = write(tmp_path, "pc_unl.txt", "img2.png 0\nimg3.png 0\n")
    with pytest.raises(DataError, match="unlabeled_ignore_labels"):
        ImageNetDataset(str(root), [first, second], OPS, unlabeled_label_path=pc_unl)
    ds = ImageNetDataset(str(root), [first, second], OPS, unlabeled_label_path=pc_unl, unlabeled_ignore_labels=True)
    assert ds.labels.tolist() == [0, 1, -1, -1] and ds.num_unlabeled == 2


def test_no_decode_op_and_hwc_output_become_chw_float(tmp_path):
    root = make_root(tmp_path, n=1)
    ds = ImageNetDataset(str(root), write(tmp_path, "t.txt", "img0.png 0\n"), [{"ResizeImage": {"size": [6, 4]}}])
    img, _ = ds[0]
    assert img.shape == (3, 4, 6) and img.dtype == np.float32 and img.max() == 0


def test_repeated_lines_train_and_are_logged_once(tmp_path, caplog):
    root = make_root(tmp_path, n=3)
    train = write(tmp_path, "train.txt", "img0.png 0\nimg1.png 1\nimg1.png 1\n./img1.png 1\nimg2.png 2\n")
    with caplog.at_level("INFO", logger="ppssld.data.datasets.imagenet"):
        ds = ImageNetDataset(str(root), train, OPS, class_num=3)
        for i in range(len(ds)):
            ds[i]
    assert len(ds) == 5 and ds.labels.tolist() == [0, 1, 1, 1, 2] and ds.num_repeated == 2
    repeats = [r.getMessage() for r in caplog.records if "repeat an image" in r.getMessage()]
    assert len(repeats) == 1 and "2 line(s) repeat an image" in repeats[0]
    np.testing.assert_array_equal(ds[1][0], ds[3][0])
    assert ds[3][0][0].max() == pytest.approx(10 / 255, abs=1e-6)  # the red channel of img1


def test_relabel(tmp_path):
    root = make_root(tmp_path, n=3)
    ds = ImageNetDataset(str(root), write(tmp_path, "t.txt", "img0.png 7\nimg1.png 3\nimg2.png\n"), OPS, relabel=True)
    assert ds.labels.tolist() == [1, 0, -1]


# ---- bad input: each kind planted, each message checked -------------------------------------------

@pytest.mark.parametrize("text, class_num, expected", [
    ("img0.png 0\nmissing.png 1\n", None, r"train\.txt:2: image .*missing\.png' does not exist"),
    ("", None, r"train\.txt: label list is empty"),
    ("img0.png 0\nimg1.png one\n", None, r"train\.txt:2: label 'one' is not an integer"),
    ("img0.png 0\nimg1.png 3\n", 3, r"train\.txt:2: label 3 is outside \[0, 3\)"),
    ("img0.png 0\nimg1.png 1\n./img0.png 1\n", None, r"train\.txt:3: path './img0\.png' has label 1 here but "
                                                      r"label 0 at .*train\.txt:1; an image has one label"),
    ("img0.png 0\n../train.txt 1\n", None, r"train\.txt:2: path '\.\./train\.txt' escapes image_root"),
    ("img0.png 0\nimg1.png -5\n", None, r"train\.txt:2: label -5 is negative"),
])
def test_bad_list_found_at_build(tmp_path, text, class_num, expected):
    root = make_root(tmp_path, n=2)
    with pytest.raises(DataError, match=expected):
        ImageNetDataset(str(root), write(tmp_path, "train.txt", text), OPS, class_num=class_num)


def test_all_list_problems_reported_together(tmp_path):
    root = make_root(tmp_path, n=2)
    text = "img0.png 0\nnope.png 0\nimg1.png x\n../../etc/passwd 0\nimg0.png 1\n"
    with pytest.raises(DataError) as err:
        ImageNetDataset(str(root), write(tmp_path, "train.txt", text), OPS)
    msg = str(err.value)
    assert "4 problem(s)" in msg
    for line in (2, 3, 4, 5):
        assert f"train.txt:{line}:" in msg


def test_missing_root_and_list(tmp_path):
    with pytest.raises(DataError, match="image_root .* is not a folder"):
        ImageNetDataset(str(tmp_path / "nope"), "x.txt", OPS)
    make_root(tmp_path, n=1)
    with pytest.raises(DataError, match=r"nolist\.txt: label list does not exist"):
        ImageNetDataset(str(tmp_path / "root"), str(tmp_path / "nolist.txt"), OPS)


def test_corrupt_and_unreadable_images_found_when_read(tmp_path):
    root = make_root(tmp_path, n=3)
    (root / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = ImageNetDataset(str(root), write(tmp_path, "train.txt", "img0.png 0\nimg1.png 1\nimg2.png 2\n"), OPS)
    assert ds[0][0].shape == (3, 8, 8)
    with pytest.raises(DataError, match=r"img1\.png \(listed at .*train\.txt:2\) cannot be read: not a decodable "
                                        r"image.*skip_bad_images"):
        ds[1]
    os.remove(root / "img2.png")  # vanished after the dataset was built
    with pytest.raises(DataError, match=r"img2\.png \(listed at .*train\.txt:3\) cannot be read"):
        ds[2]


def test_skip_bad_images_substitutes_and_reports(tmp_path):
    root = make_root(tmp_path, n=4)
    (root / "img1.png").write_bytes(b"")
    (root / "img2.png").write_bytes(b"not an image")
    ds = ImageNetDataset(str(root), write(tmp_path, "train.txt", "".join(f"img{i}.png {i}\n" for i in range(4))),
                         OPS, skip_bad_images=True)
    img, label = ds[1]
    assert label == -1 and np.allclose(img[0], 30 / 255)  # the next readable image (img3), label hidden
    assert ds[2][1] == -1 and ds[3][1] == 3
    count, paths = ds.bad_image_report()
    assert count == 2 and [os.path.basename(p) for p in paths] == ["img1.png", "img2.png"]
    assert ds.bad_image_report() == (0, [])


def test_config_validation_messages():
    validate_dataset_config({"name": "ImageNetDataset", "image_root": "x", "cls_label_path": "y",
                             "transform_ops": OPS}, "DataLoader.Train.dataset")
    with pytest.raises(ConfigError, match="Did you mean 'cls_label_path'"):
        validate_dataset_config({"name": "ImageNetDataset", "image_root": "x", "cls_label_pth": "y"})
    validate_dataset_config({"name": "ImageNetDataset", "image_root": "x", "cls_label_path": "y",
                             "batch_transform_ops": [{"MixupOperator": {"alpha": 0.2}}]})
    with pytest.raises(ConfigError, match="DataLoader.Eval.dataset.batch_transform_ops: batch operators mix training"):
        validate_dataset_config({"name": "ImageNetDataset", "image_root": "x", "cls_label_path": "y",
                                 "batch_transform_ops": [{"MixupOperator": {"alpha": 0.2}}]}, "DataLoader.Eval.dataset")
    with pytest.raises(ConfigError, match=r"batch_transform_ops\[0\].MixupOperator: alpha must be > 0"):
        validate_dataset_config({"name": "ImageNetDataset", "image_root": "x", "cls_label_path": "y",
                                 "batch_transform_ops": [{"MixupOperator": {"alpha": 0}}]})
    with pytest.raises(ConfigError, match="label_ratio: .*use name: MultiLabelDataset"):
        validate_dataset_config({"name": "ImageNetDataset", "image_root": "x", "cls_label_path": "y",
                                 "label_ratio": True})
    validate_dataset_config({"name": "MultiLabelDataset", "image_root": "x", "cls_label_path": "y",
                             "label_ratio": True})
    with pytest.raises(ConfigError, match=r"DataLoader.Eval.dataset.transform_ops\[0\]"):
        validate_dataset_config({"name": "ImageNetDataset", "image_root": "x", "cls_label_path": "y",
                                 "transform_ops": [{"ResizeImage": {"sise": 3}}]}, "DataLoader.Eval.dataset")


def test_build_dataset_from_mapping(tmp_path):
    root = make_root(tmp_path, n=2)
    ds = build_dataset({"name": "ImageNetDataset", "image_root": str(root),
                        "cls_label_path": write(tmp_path, "t.txt", "img0.png 0\nimg1.png\n"), "transform_ops": OPS})
    assert (ds.num_labeled, ds.num_unlabeled) == (1, 1)


def test_missing_required_keys():
    with pytest.raises(ConfigError, match="missing required key\\(s\\): cls_label_path"):
        validate_dataset_config({"name": "ImageNetDataset", "image_root": "x"}, "DataLoader.Train.dataset")
