"""Write ready-to-train datasets (images + PaddleClas label lists) from local files, offline.

Layout of ``out``::

    images/train/..., images/val/...   image files (image_root is ``out/images``)
    train_list.txt                     labeled training images (``train/xxx.png label``)
    unlabeled_list.txt                 with --unlabeled: paths only, labels hidden
    analysis/unlabeled_true_labels.txt hidden labels of the unlabeled images: analysis only, never train on it
    val_list.txt                       the official test split
    label_list.txt                     ``class_id class_name`` per line (PaddleClas class_id_map_file)
    prepare_summary.json               counts per class

The same arguments and seed give the same files byte for byte. Images are written into a
temporary folder that is renamed to ``images`` when complete; every list is written atomically.
"""
import gzip
import logging
import os
import pickle
import shutil
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ppssld.data.lists.label_list import IMAGE_EXTENSIONS, write_label_list
from ppssld.utils.errors import DataError
from ppssld.utils.checks import is_int
from ppssld.utils.io import atomic_write_json, atomic_write_text, ensure_dir

logger = logging.getLogger(__name__)

DATASETS = ("fashion_mnist", "digits", "cifar10", "cifar100", "imagefolder")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                       "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
VAL_EVERY = 5  # datasets without an official test split: every 5th image of each class goes to val

# One split: items (an image array, or a source file path to copy) and their labels.
Split = Tuple[Sequence[Any], np.ndarray]


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) as a uint8 array.

    Raises:
        DataError: not an IDX uint8 file, or truncated.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: holds {body.size} values, its header says {dims} (truncated download?)")
    return body.reshape(dims)


def _find(src: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(src, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"fashion_mnist: {stem}.gz not found in {src}. Expected the four IDX files "
                    f"({', '.join(f + '.gz' for f in FASHION_MNIST_FILES.values())}); install the Debian package "
                    f"dataset-fashion-mnist (files land in {FASHION_MNIST_DIR}) or pass --src DIR holding them")


def load_fashion_mnist(src: Optional[str]) -> Tuple[Split, Split, List[str]]:
    """(train, test, class names) from the four Fashion-MNIST IDX files."""
    src = src or FASHION_MNIST_DIR
    arrays = {key: read_idx(_find(src, stem)) for key, stem in FASHION_MNIST_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(f"fashion_mnist {split}: {len(arrays[f'{split}_images'])} images but "
                            f"{len(arrays[f'{split}_labels'])} labels")
    return ((arrays["train_images"], arrays["train_labels"].astype(np.int64)),
            (arrays["test_images"], arrays["test_labels"].astype(np.int64)), list(FASHION_MNIST_CLASSES))


def _every_nth_split(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Fixed train/val split (independent of --seed): every VAL_EVERY-th image of each class to val."""
    val = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        val[np.flatnonzero(labels == cls)[::VAL_EVERY]] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


def load_digits_set() -> Tuple[Split, Split, List[str]]:
    """(train, val, class names) from scikit-learn's bundled 8x8 digits (no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train, val = _every_nth_split(labels)
    return (images[train], labels[train]), (images[val], labels[val]), [str(i) for i in range(10)]


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR python batches: numpy arrays and builtins only, nothing executable."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return super().find_class(module, name)


def _unpickle(path: str) -> Dict[Any, Any]:
    if not os.path.isfile(path):
        raise DataError(f"{path} not found: --src must be the extracted CIFAR python folder "
                        f"(cifar-10-batches-py or cifar-100-python)")
    try:
        with open(path, "rb") as handle:
            obj = _SafeUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a CIFAR python batch ({exc})") from exc
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_images(batch: Dict[str, Any], path: str) -> np.ndarray:
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' should be N x 3072 bytes, got shape {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def load_cifar(src: Optional[str], fine: bool) -> Tuple[Split, Split, List[str]]:
    """(train, test, class names) from the CIFAR-10 (``fine=False``) or CIFAR-100 python folder."""
    if not src:
        raise DataError("cifar10/cifar100 need --src: the extracted python folder (cifar-10-batches-py or "
                        "cifar-100-python, from the python version of the archive)")
    sub = "cifar-100-python" if fine else "cifar-10-batches-py"
    if os.path.isdir(os.path.join(src, sub)):
        src = os.path.join(src, sub)
    if fine:
        train_files, test_files, meta_file, key, names_key = ["train"], ["test"], "meta", "fine_labels", \
            "fine_label_names"
    else:
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, meta_file, key, names_key = ["test_batch"], "batches.meta", "labels", "label_names"

    def read(files: List[str]) -> Split:
        images, labels = [], []
        for name in files:
            path = os.path.join(src, name)
            batch = _unpickle(path)
            if key not in batch or "data" not in batch:
                raise DataError(f"{path}: missing '{key}' or 'data' (is this the right CIFAR variant?)")
            images.append(_cifar_images(batch, path))
            labels.append(np.asarray(batch[key], dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)

    meta = _unpickle(os.path.join(src, meta_file))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    return read(train_files), read(test_files), names


def _class_files(folder: str) -> Tuple[List[str], List[List[str]]]:
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files = [sorted(os.path.join(folder, c, f) for f in os.listdir(os.path.join(folder, c))
                    if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, c, f)))
             for c in classes]
    return classes, files


def load_imagefolder(src: Optional[str]) -> Tuple[Split, Split, List[str]]:
    """(train, val, class names) from ``src/<class>/*`` or ``src/{train,val|test}/<class>/*``."""
    if not src or not os.path.isdir(src):
        raise DataError(f"imagefolder needs --src: a folder with one subfolder per class, got {src!r}")
    val_dir = next((os.path.join(src, d) for d in ("val", "test") if os.path.isdir(os.path.join(src, d))), None)
    if os.path.isdir(os.path.join(src, "train")) and val_dir:
        classes, train_files = _class_files(os.path.join(src, "train"))
        val_classes, val_files = _class_files(val_dir)
        if val_classes != classes:
            raise DataError(f"{src}: train/ and {os.path.basename(val_dir)}/ hold different class folders")
        train = ([f for fs in train_files for f in fs], np.array([i for i, fs in enumerate(train_files) for _ in fs]))
        val = ([f for fs in val_files for f in fs], np.array([i for i, fs in enumerate(val_files) for _ in fs]))
    else:
        classes, files = _class_files(src)
        paths = [f for fs in files for f in fs]
        labels = np.array([i for i, fs in enumerate(files) for _ in fs], dtype=np.int64)
        train_idx, val_idx = _every_nth_split(labels)
        train = ([paths[i] for i in train_idx], labels[train_idx])
        val = ([paths[i] for i in val_idx], labels[val_idx])
    if not classes or len(train[0]) == 0:
        raise DataError(f"{src}: no class subfolders with images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return (train[0], train[1].astype(np.int64)), (val[0], val[1].astype(np.int64)), classes


def split_labeled(labels: np.ndarray, class_num: int, labeled: Optional[int], unlabeled: Optional[int],
                  seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Class-balanced labeled indices and random unlabeled indices from the rest (both sorted).

    Args:
        labels: training labels.
        class_num: number of classes.
        labeled: labeled images in total (spread evenly over classes; None = all not unlabeled).
        unlabeled: unlabeled images (None = none).
        seed: the split seed.
    Returns:
        ``(labeled_indices, unlabeled_indices)``.
    Raises:
        DataError: asking for more images than exist.
    """
    rng = np.random.default_rng(int(seed))
    total = len(labels)
    if labeled is not None and labeled < 1 or unlabeled is not None and unlabeled < 1:
        raise DataError("--labeled and --unlabeled must be positive")
    if labeled is None:
        if unlabeled is None:
            return np.arange(total), np.array([], dtype=np.int64)
        if unlabeled >= total:
            raise DataError(f"--unlabeled {unlabeled}: only {total} training images, none would stay labeled")
        chosen = np.sort(rng.choice(total, size=unlabeled, replace=False))
        return np.setdiff1d(np.arange(total), chosen), chosen
    per_class = np.full(class_num, labeled // class_num)
    per_class[rng.permutation(class_num)[: labeled % class_num]] += 1
    picked = []
    for cls in range(class_num):
        pool = np.flatnonzero(labels == cls)
        if len(pool) < per_class[cls]:
            raise DataError(f"--labeled {labeled} needs {per_class[cls]} images of class {cls}, which has {len(pool)}")
        picked.append(rng.permutation(pool)[: per_class[cls]])
    labeled_idx = np.sort(np.concatenate(picked))
    if unlabeled is None:
        return labeled_idx, np.array([], dtype=np.int64)
    rest = np.setdiff1d(np.arange(total), labeled_idx)
    if unlabeled > len(rest):
        raise DataError(f"--unlabeled {unlabeled}: only {len(rest)} training images remain after {labeled} labeled")
    return labeled_idx, np.sort(rng.choice(rest, size=unlabeled, replace=False))


def _write_split(items: Sequence[Any], folder: str, rel: str, desc: str) -> List[str]:
    """Write arrays as PNG (or copy source files) into ``folder``; return paths relative to image_root."""
    os.makedirs(folder, exist_ok=True)
    width = max(5, len(str(len(items) - 1)))
    paths = []
    for index, item in enumerate(tqdm(items, desc=desc, unit="img", disable=None)):
        if isinstance(item, str):
            cls_dir = os.path.basename(os.path.dirname(item))
            name = os.path.join(cls_dir, os.path.basename(item))
            os.makedirs(os.path.join(folder, cls_dir), exist_ok=True)
            shutil.copyfile(item, os.path.join(folder, name))
        else:
            arr = np.asarray(item, dtype=np.uint8)
            ok, buf = cv2.imencode(".png", arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
            if not ok:
                raise DataError(f"could not encode image {index} of {desc} as PNG")
            name = f"{index:0{width}d}.png"
            with open(os.path.join(folder, name), "wb") as handle:
                handle.write(buf.tobytes())
        paths.append(f"{rel}/{name}".replace(os.sep, "/"))
    return paths


def _counts(labels: np.ndarray, class_num: int) -> List[int]:
    return np.bincount(labels, minlength=class_num).astype(int).tolist() if len(labels) else [0] * class_num


def prepare_dataset(name: str, out: str, src: Optional[str] = None, labeled: Optional[int] = None,
                    unlabeled: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
    """Write dataset ``name`` into ``out`` (see the module docstring for the layout).

    Args:
        name: one of :data:`DATASETS`.
        out: output folder (created; a previous ``images/`` there is replaced).
        src: source folder (fashion_mnist: default /usr/share/datasets/fashion-mnist).
        labeled: class-balanced labeled training images in total (default all).
        unlabeled: training images moved, labels hidden, to ``unlabeled_list.txt``.
        seed: seed of the labeled/unlabeled split.
    Returns:
        Summary: counts overall and per class, class names, file names, ``image_root``.
    """
    loaders = {"fashion_mnist": lambda: load_fashion_mnist(src), "digits": load_digits_set,
               "cifar10": lambda: load_cifar(src, False), "cifar100": lambda: load_cifar(src, True),
               "imagefolder": lambda: load_imagefolder(src)}
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not is_int(seed) or seed < 0:  # numpy's seed sequence takes no negative number
        raise DataError(f"--seed (the labeled/unlabeled split's seed) must be an int >= 0, got {seed!r}")
    if not isinstance(out, str) or not out:
        raise DataError(f"--out must name the output folder, got {out!r}")
    (train_items, train_labels), (val_items, val_labels), class_names = loaders[name]()
    class_num = len(class_names)
    for split, labels in (("train", train_labels), ("val", val_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= class_num):
            raise DataError(f"{name} {split}: labels outside [0, {class_num}) (class names: {class_num})")
    labeled_idx, unlabeled_idx = split_labeled(train_labels, class_num, labeled, unlabeled, seed)

    ensure_dir(out)  # a file in the way: an OutputError naming it
    partial = os.path.join(out, ".images.partial")
    if os.path.exists(partial):
        shutil.rmtree(partial)
    train_paths = _write_split(train_items, os.path.join(partial, "train"), "train", f"{name} train")
    val_paths = _write_split(val_items, os.path.join(partial, "val"), "val", f"{name} val")
    images = os.path.join(out, "images")
    if os.path.exists(images):
        shutil.rmtree(images)
    os.replace(partial, images)

    files = {"train_list": "train_list.txt", "val_list": "val_list.txt", "label_list": "label_list.txt"}
    write_label_list(os.path.join(out, files["train_list"]),
                     [(train_paths[i], int(train_labels[i])) for i in labeled_idx])
    write_label_list(os.path.join(out, files["val_list"]), [(p, int(v)) for p, v in zip(val_paths, val_labels)])
    atomic_write_text(os.path.join(out, files["label_list"]),
                      "".join(f"{i} {n}\n" for i, n in enumerate(class_names)))
    stale = [os.path.join(out, "unlabeled_list.txt"), os.path.join(out, "analysis", "unlabeled_true_labels.txt")]
    if len(unlabeled_idx):
        files["unlabeled_list"] = "unlabeled_list.txt"
        files["unlabeled_true_labels"] = "analysis/unlabeled_true_labels.txt"
        write_label_list(stale[0], [(train_paths[i], None) for i in unlabeled_idx])
        write_label_list(stale[1], [(train_paths[i], int(train_labels[i])) for i in unlabeled_idx])
    else:
        for path in stale:
            if os.path.exists(path):
                os.remove(path)
    summary = {
        "dataset": name, "seed": int(seed), "class_num": class_num, "class_names": class_names,
        "train_labeled": int(len(labeled_idx)), "unlabeled": int(len(unlabeled_idx)), "val": int(len(val_paths)),
        "unused_train": int(len(train_labels) - len(labeled_idx) - len(unlabeled_idx)),
        "per_class": {"train_labeled": _counts(train_labels[labeled_idx], class_num),
                      "unlabeled_hidden": _counts(train_labels[unlabeled_idx], class_num),
                      "val": _counts(val_labels, class_num)},
        "files": files, "image_root": "images",
    }
    atomic_write_json(os.path.join(out, "prepare_summary.json"), summary)
    return dict(summary, out=os.path.abspath(out), image_root=os.path.join(os.path.abspath(out), "images"))


def format_summary(summary: Dict[str, Any]) -> str:
    """A per-class table and the config keys to use, for the console."""
    per = summary["per_class"]
    width = max(len(n) for n in summary["class_names"]) + 2
    lines = [f"{'class':<{width + 4}}{'labeled':>9}{'unlabeled':>11}{'val':>7}"]
    for i, cls in enumerate(summary["class_names"]):
        lines.append(f"{i:>3} {cls:<{width}}{per['train_labeled'][i]:>9}{per['unlabeled_hidden'][i]:>11}"
                     f"{per['val'][i]:>7}")
    lines.append(f"{'total':<{width + 4}}{summary['train_labeled']:>9}{summary['unlabeled']:>11}{summary['val']:>7}")
    if summary["unlabeled"]:
        lines.append("(unlabeled counts use the hidden labels in analysis/, which training never reads)")
    if summary["unused_train"]:
        lines.append(f"({summary['unused_train']} training images are in neither list)")
    out = summary["out"]
    lines += ["", "DataLoader.Train.dataset:", "  name: ImageNetDataset", f"  image_root: {summary['image_root']}",
              f"  cls_label_path: {os.path.join(out, 'train_list.txt')}"]
    if summary["unlabeled"]:
        lines.append(f"  unlabeled_label_path: {os.path.join(out, 'unlabeled_list.txt')}")
    lines += [f"  class_num: {summary['class_num']}",
              f"DataLoader.Eval.dataset.cls_label_path: {os.path.join(out, 'val_list.txt')}"]
    return "\n".join(lines)
