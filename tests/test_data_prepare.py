"""tools/prepare_data.py: every source, the labeled/unlabeled split, byte-for-byte determinism."""
import gzip
import os
import pickle
import struct
import sys

import cv2
import numpy as np
import pytest

from ppssld.data.lists.label_list import read_label_list
from ppssld.data.prepare import FASHION_MNIST_DIR, prepare_dataset, read_idx, split_labeled
from ppssld.utils.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import prepare_data  # noqa: E402


def _tree(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = handle.read()
    return out


def _decode(path):
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)


def test_digits_split_counts_and_hidden_labels(tmp_path):
    out = str(tmp_path / "digits")
    summary = prepare_dataset("digits", out, labeled=50, unlabeled=300, seed=3)
    assert summary["class_num"] == 10 and summary["train_labeled"] == 50 and summary["unlabeled"] == 300
    assert summary["per_class"]["train_labeled"] == [5] * 10
    assert summary["val"] == 364 and sum(summary["per_class"]["val"]) == 364
    train = read_label_list(os.path.join(out, "train_list.txt"))
    unl_text = open(os.path.join(out, "unlabeled_list.txt")).read().splitlines()
    assert len(train) == 50 and len(unl_text) == 300 and all(" " not in line for line in unl_text)
    assert not {r.path for r in train} & set(unl_text)
    truth = read_label_list(os.path.join(out, "analysis", "unlabeled_true_labels.txt"))
    assert [r.path for r in truth] == unl_text and all(r.label >= 0 for r in truth)
    assert open(os.path.join(out, "label_list.txt")).read().splitlines()[:2] == ["0 0", "1 1"]
    img = _decode(os.path.join(out, "images", train[0].path))
    assert img.shape == (8, 8) and img.dtype == np.uint8 and img.max() > 200


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    a = prepare_dataset("digits", str(tmp_path / "a"), labeled=30, unlabeled=100, seed=1)
    b = prepare_dataset("digits", str(tmp_path / "b"), labeled=30, unlabeled=100, seed=1)
    assert a["train_labeled"] == b["train_labeled"]
    tree_a = _tree(str(tmp_path / "a"))
    assert tree_a == _tree(str(tmp_path / "b")) and len(tree_a) > 1797
    prepare_dataset("digits", str(tmp_path / "c"), labeled=30, unlabeled=100, seed=2)
    assert _tree(str(tmp_path / "c"))["train_list.txt"] != tree_a["train_list.txt"]
    # re-running into the same folder without --unlabeled removes the stale unlabeled files
    prepare_dataset("digits", str(tmp_path / "a"), seed=1)
    assert not os.path.exists(tmp_path / "a" / "unlabeled_list.txt")
    assert len(read_label_list(str(tmp_path / "a" / "train_list.txt"))) == 1797 - 364


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory):
    """The first 60 train / 20 test images of the real Fashion-MNIST files, as a --src folder."""
    src = tmp_path_factory.mktemp("fm_src")
    if os.path.isdir(FASHION_MNIST_DIR):
        train_x = read_idx(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))[:60]
        train_y = read_idx(os.path.join(FASHION_MNIST_DIR, "train-labels-idx1-ubyte.gz"))[:60]
        test_x = read_idx(os.path.join(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz"))[:20]
        test_y = read_idx(os.path.join(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))[:20]
    else:  # machine without the Debian package: synthetic images in the same format
        rng = np.random.RandomState(0)
        train_x, test_x = rng.randint(0, 256, (60, 28, 28)), rng.randint(0, 256, (20, 28, 28))
        train_y, test_y = np.arange(60) % 10, np.arange(20) % 10
    for name, arr in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                      ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        _write_idx(str(src / f"{name}.gz"), np.asarray(arr))
    return str(src), np.asarray(train_x), np.asarray(train_y), np.asarray(test_x), np.asarray(test_y)


def test_fashion_mnist_pixels_and_labels(tmp_path, fashion_subset):
    src, train_x, train_y, test_x, test_y = fashion_subset
    out = str(tmp_path / "fm")
    summary = prepare_dataset("fashion_mnist", out, src=src, labeled=20, unlabeled=30, seed=0)
    assert summary["class_names"][0] == "T-shirt/top" and summary["class_names"][9] == "Ankle boot"
    assert (summary["train_labeled"], summary["unlabeled"], summary["val"]) == (20, 30, 20)
    val = read_label_list(os.path.join(out, "val_list.txt"))
    assert [r.label for r in val] == test_y.tolist()
    assert np.array_equal(_decode(os.path.join(out, "images", val[7].path)), test_x[7])
    for rec in read_label_list(os.path.join(out, "train_list.txt")):
        index = int(os.path.basename(rec.path).split(".")[0])
        assert rec.label == train_y[index]
        assert np.array_equal(_decode(os.path.join(out, "images", rec.path)), train_x[index])


def test_fashion_mnist_errors(tmp_path, fashion_subset):
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        prepare_dataset("fashion_mnist", str(tmp_path / "o"), src=str(tmp_path))
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in os.listdir(fashion_subset[0]):
        (bad / name).write_bytes(open(os.path.join(fashion_subset[0], name), "rb").read())
    with gzip.open(str(bad / "train-images-idx3-ubyte.gz"), "wb") as handle:
        handle.write(b"\x00\x00\x08\x03" + struct.pack(">3I", 60, 28, 28) + b"\x00" * 100)
    with pytest.raises(DataError, match="truncated"):
        prepare_dataset("fashion_mnist", str(tmp_path / "o"), src=str(bad))


def _cifar_batch(path, n, key, offset, pickler_protocol=2):
    data = np.zeros((n, 3, 32, 32), np.uint8)
    data[:, 0] = 200  # red plane
    data[:, 2, 0, 0] = np.arange(n) + offset
    with open(path, "wb") as handle:
        pickle.dump({b"data": data.reshape(n, -1), key: [(i + offset) % 3 for i in range(n)]}, handle,
                    protocol=pickler_protocol)


def test_cifar10_and_cifar100(tmp_path):
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for i in range(1, 6):
        _cifar_batch(str(c10 / f"data_batch_{i}"), 2, b"labels", 2 * (i - 1))
    _cifar_batch(str(c10 / "test_batch"), 3, b"labels", 100)
    with open(c10 / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird"]}, handle)
    summary = prepare_dataset("cifar10", str(tmp_path / "o10"), src=str(tmp_path))
    assert (summary["train_labeled"], summary["val"], summary["class_names"]) == (10, 3, ["airplane", "automobile",
                                                                                          "bird"])
    rec = read_label_list(str(tmp_path / "o10" / "train_list.txt"))[4]
    img = cv2.cvtColor(_decode(str(tmp_path / "o10" / "images" / rec.path)), cv2.COLOR_BGR2RGB)
    assert img.shape == (32, 32, 3) and img[5, 5].tolist() == [200, 0, 0] and img[0, 0, 2] == 4 and rec.label == 1

    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    _cifar_batch(str(c100 / "train"), 6, b"fine_labels", 0, pickler_protocol=4)
    _cifar_batch(str(c100 / "test"), 3, b"fine_labels", 0)
    with open(c100 / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [b"apple", b"bear", b"cup"]}, handle)
    summary = prepare_dataset("cifar100", str(tmp_path / "o100"), src=str(c100))
    assert (summary["train_labeled"], summary["val"], summary["class_names"][2]) == (6, 3, "cup")


def test_cifar_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": Evil()}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"a"]}, handle)
    with pytest.raises(DataError, match="refusing to load"):
        prepare_dataset("cifar10", str(tmp_path / "o"), src=str(tmp_path))
    with pytest.raises(DataError, match="need --src"):
        prepare_dataset("cifar10", str(tmp_path / "o"))


def test_imagefolder_flat_and_split(tmp_path):
    src = tmp_path / "src"
    for cls, count in (("cat", 6), ("dog house", 5)):
        (src / cls).mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(src / cls / f"pic {i}.jpg"), np.full((6, 6, 3), 40 * i, np.uint8))
    (src / "cat" / "notes.txt").write_text("not an image")
    summary = prepare_dataset("imagefolder", str(tmp_path / "o"), src=str(src), unlabeled=3, seed=0)
    assert summary["class_names"] == ["cat", "dog house"]
    assert summary["per_class"]["val"] == [2, 1] and summary["train_labeled"] + summary["unlabeled"] == 8
    unl = read_label_list(str(tmp_path / "o" / "unlabeled_list.txt"), unlabeled=True)
    assert len(unl) == 3 and all(os.path.isfile(tmp_path / "o" / "images" / r.path) for r in unl)
    first = read_label_list(str(tmp_path / "o" / "val_list.txt"))[0]
    assert first.path == "val/cat/pic 0.jpg" and first.label == 0
    assert (tmp_path / "o" / "images" / first.path).read_bytes() == (src / "cat" / "pic 0.jpg").read_bytes()

    split = tmp_path / "split"
    for part, n in (("train", 3), ("val", 1)):
        for cls in ("a", "b"):
            (split / part / cls).mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(split / part / cls / f"{i}.png"), np.zeros((4, 4), np.uint8))
    summary = prepare_dataset("imagefolder", str(tmp_path / "o2"), src=str(split))
    assert (summary["train_labeled"], summary["val"]) == (6, 2)


def test_split_errors():
    labels = np.repeat(np.arange(3), 4)
    lab, unl = split_labeled(labels, 3, 7, 5, seed=0)
    assert len(lab) == 7 and len(unl) == 5 and not set(lab) & set(unl)
    assert sorted(np.bincount(labels[lab], minlength=3).tolist()) == [2, 2, 3]
    with pytest.raises(DataError, match="needs 5 images of class"):
        split_labeled(labels, 3, 15, None, seed=0)
    with pytest.raises(DataError, match="only 5 training images remain"):
        split_labeled(labels, 3, 7, 6, seed=0)


def test_cli_prints_summary(tmp_path, capsys):
    assert prepare_data.main(["--dataset", "digits", "--out", str(tmp_path / "d"), "--labeled", "20"]) == 0
    text = capsys.readouterr().out
    assert "total" in text and "cls_label_path:" in text and "(1413 training images are in neither list)" in text
    with pytest.raises(DataError):
        prepare_data.main(["--dataset", "cifar10", "--out", str(tmp_path / "x")])
