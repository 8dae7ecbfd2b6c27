"""Shared fixtures: tiny image datasets and tiny configs, made on the fly (nothing downloaded)."""
import os
import sys
from typing import Dict, List

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def fashion_mnist_installed() -> bool:
    """Whether the Debian ``fashion-mnist`` package's files are present."""
    return os.path.isfile(os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``fashion_mnist`` skip without the data set locally, but FAIL in CI (``CI`` set),
    where it is installed: a missing package must not make them vanish silently."""
    if item.get_closest_marker("fashion_mnist") is None or fashion_mnist_installed():
        return
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        pytest.fail(f"Fashion-MNIST is missing from {FASHION_MNIST} in CI (CI={os.environ['CI']}): install the "
                    f"dataset-fashion-mnist package (scripts/install.sh does)", pytrace=False)
    pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST}")


def write_images(root: str, count: int, classes: int, size: int = 32, seed: int = 0,
                 unlabeled: int = 0) -> Dict[str, str]:
    """Write ``count`` labeled and ``unlabeled`` unlabeled PNGs whose colour depends on the class.

    Returns:
        Paths of ``train_list.txt``, ``val_list.txt`` (same labeled images) and ``unlabeled_list.txt``.
    """
    rng = np.random.RandomState(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    lines: List[str] = []
    unl: List[str] = []
    for i in range(count + unlabeled):
        label = i % classes
        base = np.zeros((size, size, 3), np.float32)
        base[..., label % 3] = 60 + 150 * (label / max(classes - 1, 1))
        img = np.clip(base + rng.randn(size, size, 3) * 20, 0, 255).astype(np.uint8)
        rel = f"images/{i:05d}.png"
        cv2.imwrite(os.path.join(root, rel), img)
        (lines if i < count else unl).append(f"{rel} {label}" if i < count else rel)
    paths = {}
    for name, rows in (("train_list.txt", lines), ("val_list.txt", lines), ("unlabeled_list.txt", unl)):
        paths[name] = os.path.join(root, name)
        with open(paths[name], "w", encoding="utf-8") as handle:
            handle.write("\n".join(rows) + ("\n" if rows else ""))
    return paths


def loader_cfg(root: str, list_path: str, train: bool, batch_size: int = 8, size: int = 32,
               unlabeled: str = None) -> dict:
    """A PaddleClas ``DataLoader.Train``/``Eval`` mapping for the tiny images."""
    ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}]
    if train:
        ops += [{"RandFlipImage": {"flip_code": 1}}]
    ops += [{"ResizeImage": {"size": size}},
            {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                "order": ""}},
            {"ToCHWImage": None}]
    dataset = {"name": "ImageNetDataset", "image_root": root, "cls_label_path": list_path, "transform_ops": ops}
    if unlabeled:
        dataset["unlabeled_label_path"] = unlabeled
    return {"dataset": dataset,
            "sampler": {"name": "DistributedBatchSampler", "batch_size": batch_size, "drop_last": False,
                        "shuffle": train},
            "loader": {"num_workers": 0, "use_shared_memory": False}}


@pytest.fixture(autouse=True)
def private_cache_home(tmp_path_factory, monkeypatch):
    """Every test (and the tools it runs) gets its own ``XDG_CACHE_HOME``: nothing reads or writes the real
    ``~/.cache`` (a teacher evaluation kept there would make a later run skip the evaluation a test expects)."""
    home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("PPSSLD_CACHE_DIR", raising=False)  # saved teacher engines go there too
    return home


@pytest.fixture
def tiny_data(tmp_path):
    """24 labeled + 8 unlabeled 32x32 images of 4 classes."""
    root = str(tmp_path / "data")
    paths = write_images(root, 24, 4, unlabeled=8)
    return root, paths


def save_random_backbone(path: str, name: str = "ResNet18", class_num: int = 4, seed: int = 0) -> str:
    """Save a randomly initialised zoo backbone as a stand-in teacher."""
    import paddle

    from ppssld.arch.zoo import build_backbone

    paddle.seed(seed)
    layer = build_backbone(name, class_num=class_num)
    paddle.save(layer.state_dict(), path)
    return path


def distill_config(root: str, paths: Dict[str, str], teacher: str, out: str, epochs: int = 1,
                   loss: str = "JSDivLoss", bn_mode: str = "eval", with_unlabeled: bool = True) -> dict:
    """A complete tiny DistillationModel config (ResNet18 teacher -> MobileNetV3_small_x0_35)."""
    return {
        "Global": {"output_dir": out, "device": "cpu", "epochs": epochs, "save_interval": 1,
                   "eval_during_train": True, "eval_interval": 1, "print_batch_step": 1, "seed": 7,
                   "image_shape": [3, 32, 32]},
        "Arch": {"name": "DistillationModel", "freeze_params_list": [True, False], "infer_model_name": "Student",
                 "teacher_bn_mode": bn_mode,
                 "models": [{"Teacher": {"name": "ResNet18", "class_num": 4, "pretrained": teacher}},
                            {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 4}}]},
        "Loss": {"Train": [{loss: {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}],
                 "Eval": [{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}}]},
        "Optimizer": {"name": "Momentum", "momentum": 0.9,
                      "lr": {"name": "Cosine", "learning_rate": 0.05, "warmup_epoch": 0},
                      "regularizer": {"name": "L2", "coeff": 1e-5}},
        "DataLoader": {"Train": loader_cfg(root, paths["train_list.txt"], True,
                                           unlabeled=paths["unlabeled_list.txt"] if with_unlabeled else None),
                       "Eval": loader_cfg(root, paths["val_list.txt"], False)},
        "Metric": {"Eval": [{"DistillationTopkAcc": {"model_key": "Student", "topk": [1, 2]}}]},
    }


PIPELINE_SUFFIX = "_pipeline.yaml"


def shipped_configs(pipelines: bool = False) -> List[str]:
    """Shipped YAMLs under ppcls_configs/: training configs, or (``pipelines``) ssld_pipeline configs."""
    import glob

    paths = sorted(glob.glob(os.path.join(ROOT, "ppcls_configs", "**", "*.yaml"), recursive=True))
    return [p for p in paths if p.endswith(PIPELINE_SUFFIX) == pipelines]
