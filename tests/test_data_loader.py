"""Sampler shuffling/sharding and the paddle DataLoader built from a PaddleClas mapping."""
import logging
import time

import cv2
import numpy as np
import pytest

from ppssld.data.loading.loader import build_dataloader
from ppssld.data.loading.sampler import DistributedBatchSampler, epoch_permutation
from ppssld.utils.errors import ConfigError, DataError

TRAIN_OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"RandCropImage": {"size": 8}},
             {"RandFlipImage": {"flip_code": 1}},
             {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5] * 3, "std": [0.5] * 3, "order": ""}}]


class _Sized:
    def __init__(self, n):
        self.n = n
        self.epoch = None

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epoch = epoch


def _collect(sampler):
    return [i for batch in sampler for i in batch]


def test_shuffle_is_pure_function_of_seed_and_epoch():
    a = DistributedBatchSampler(_Sized(50), 8, shuffle=True, seed=7, num_replicas=1, rank=0)
    b = DistributedBatchSampler(_Sized(50), 8, shuffle=True, seed=7, num_replicas=1, rank=0)
    a.set_epoch(3)
    b.set_epoch(2)
    b.set_epoch(3)
    assert _collect(a) == _collect(b) == epoch_permutation(50, 7, 3).tolist()
    assert sorted(_collect(a)) == list(range(50))
    a.set_epoch(4)
    assert _collect(a) != _collect(b)
    assert a.dataset.epoch == 4  # the dataset's augmentation key follows the epoch
    c = DistributedBatchSampler(_Sized(50), 8, shuffle=True, seed=8, num_replicas=1, rank=0)
    c.set_epoch(3)
    assert _collect(c) != _collect(b)
    assert _collect(DistributedBatchSampler(_Sized(5), 2, num_replicas=1, rank=0)) == [0, 1, 2, 3, 4]


def test_train_shards_are_padded_and_equal():
    shards = []
    for rank in range(3):
        s = DistributedBatchSampler(_Sized(10), 2, shuffle=True, seed=1, num_replicas=3, rank=rank)
        s.set_epoch(5)
        shards.append(_collect(s))
        assert len(s) == 2 and len(list(s)) == 2
    assert [len(x) for x in shards] == [4, 4, 4]
    flat = sum(shards, [])
    assert set(flat) == set(range(10)) and len(flat) == 12
    dropped = DistributedBatchSampler(_Sized(10), 3, drop_last=True, num_replicas=3, rank=0)
    assert len(dropped) == 1 and [len(b) for b in dropped] == [3]


@pytest.mark.parametrize("size, world", [(10, 3), (7, 4), (2, 4), (13, 1)])
def test_eval_sees_every_sample_exactly_once(size, world):
    seen = []
    for rank in range(world):
        s = DistributedBatchSampler(_Sized(size), 2, shuffle=False, drop_last=True, num_replicas=world, rank=rank,
                                    mode="eval")
        got = _collect(s)
        assert len(list(s)) == len(s)
        seen += got
    assert sorted(seen) == list(range(size))


def test_sampler_argument_errors():
    with pytest.raises(ConfigError, match="batch_size"):
        DistributedBatchSampler(_Sized(4), 0)
    with pytest.raises(ConfigError, match="rank 2 is outside world size 2"):
        DistributedBatchSampler(_Sized(4), 1, num_replicas=2, rank=2)


def _dataset_dir(tmp_path, n=10, bad=()):
    root = tmp_path / "root"
    root.mkdir()
    lines, unl = [], []
    for i in range(n):
        img = np.random.RandomState(i).randint(0, 256, (12, 14, 3), np.uint8)
        cv2.imwrite(str(root / f"{i}.png"), img)
        (lines if i < n // 2 else unl).append(f"{i}.png {i % 3}" if i < n // 2 else f"{i}.png")
    for i in bad:
        (root / f"{i}.png").write_bytes(b"broken")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "unl.txt").write_text("\n".join(unl) + "\n")
    return {"name": "ImageNetDataset", "image_root": str(root), "cls_label_path": str(tmp_path / "train.txt"),
            "unlabeled_label_path": str(tmp_path / "unl.txt"), "transform_ops": TRAIN_OPS, "class_num": 3}


def _cfg(dataset, workers=0, batch=4, shuffle=True):
    return {"dataset": dataset, "sampler": {"name": "DistributedBatchSampler", "batch_size": batch, "drop_last": False,
                                            "shuffle": shuffle},
            "loader": {"num_workers": workers, "use_shared_memory": True}}


def _epoch(loader, sampler, epoch):
    sampler.set_epoch(epoch)
    batches = [(x.numpy(), y.numpy()) for x, y in loader]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), batches


def test_loader_batches_and_exact_reproducibility_across_workers(tmp_path):
    ds_cfg = _dataset_dir(tmp_path)
    loader0, sampler0 = build_dataloader(_cfg(ds_cfg, workers=0), "train", seed=5)
    x0, y0, batches = _epoch(loader0, sampler0, 2)
    assert loader0.dataset.num_labeled == 5 and loader0.dataset.num_unlabeled == 5
    assert [b[0].shape for b in batches] == [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    assert sorted(y0.tolist()) == [-1] * 5 + [0, 0, 1, 1, 2]
    loader2, sampler2 = build_dataloader(_cfg(ds_cfg, workers=2), "train", seed=5)
    x2, y2, _ = _epoch(loader2, sampler2, 2)
    assert np.array_equal(x0, x2) and np.array_equal(y0, y2)  # same (seed, epoch): same batches, any worker count
    x3, _, _ = _epoch(loader0, sampler0, 3)
    assert not np.array_equal(x0, x3)


def test_eval_loader_in_order(tmp_path):
    ds_cfg = _dataset_dir(tmp_path)
    ds_cfg["transform_ops"] = [{"DecodeImage": None}, {"CropImage": {"size": 8}}]
    loader, sampler = build_dataloader(_cfg(ds_cfg, batch=3, shuffle=False), "eval", seed=0, where="DataLoader.Eval")
    x, y, batches = _epoch(loader, sampler, 0)
    assert len(batches) == len(sampler) == 4 and x.shape == (10, 3, 8, 8)
    assert y.tolist() == [0, 1, 2, 0, 1, -1, -1, -1, -1, -1]


def test_skip_bad_images_in_workers_reports_count(tmp_path, caplog):
    ds_cfg = dict(_dataset_dir(tmp_path, bad=(1, 7)), skip_bad_images=True)
    loader, sampler = build_dataloader(_cfg(ds_cfg, workers=2), "train", seed=0)
    with caplog.at_level(logging.WARNING, logger="ppssld.data.datasets.imagenet"):
        _, y, _ = _epoch(loader, sampler, 0)
    count, paths = loader.dataset.last_bad_report
    assert count == 2 and sorted(p.rsplit("/", 1)[1] for p in paths) == ["1.png", "7.png"]
    assert "skipped 2 unreadable image(s)" in caplog.text
    assert len(y) == 10 and (y == -1).sum() == 6  # 5 unlabeled + the labeled bad image 1.png


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_bad_image_stops_the_pass_without_skip(tmp_path, workers):
    """A corrupt image stops the pass within seconds with its file and list line, any worker count
    (num_workers 0 used to hang: Paddle's reader thread died and the consumer waited forever)."""
    loader, sampler = build_dataloader(_cfg(_dataset_dir(tmp_path, bad=(3,)), workers=workers), "train", seed=0)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"3\.png \(listed at .*train\.txt:4\) cannot be read"):
        _epoch(loader, sampler, 0)
    assert time.monotonic() - start < 20


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_all_neighbours_unreadable_stops_in_workers_too(tmp_path):
    """skip_bad_images gives up after 16 unreadable neighbours; from a worker that error arrives intact too."""
    ds_cfg = dict(_dataset_dir(tmp_path, n=20, bad=tuple(range(20))), skip_bad_images=True)
    loader, sampler = build_dataloader(_cfg(ds_cfg, workers=2), "train", seed=0)
    with pytest.raises(DataError, match=r"and the 16 images after it in the list are all unreadable"):
        _epoch(loader, sampler, 0)


def test_loader_config_errors(tmp_path):
    ds_cfg = _dataset_dir(tmp_path)
    with pytest.raises(ConfigError, match="Did you mean 'num_workers'"):
        build_dataloader(dict(_cfg(ds_cfg), loader={"num_worker": 1}), "train")
    with pytest.raises(ConfigError, match="Did you mean 'drop_last'"):
        build_dataloader(dict(_cfg(ds_cfg), sampler={"batch_size": 2, "droplast": True}), "train")
    with pytest.raises(ConfigError, match="unknown sampler 'PKSampler'"):
        build_dataloader(dict(_cfg(ds_cfg), sampler={"name": "PKSampler", "batch_size": 2}), "train")
    with pytest.raises(ConfigError, match="Did you mean 'sampler'"):
        build_dataloader(dict(_cfg(ds_cfg), samplr={}), "train")
    with pytest.raises(ConfigError, match="mode must be"):
        build_dataloader(_cfg(ds_cfg), "test")


def test_class_num_from_the_model_bounds_labels(tmp_path):
    ds_cfg = _dataset_dir(tmp_path)
    del ds_cfg["class_num"]
    with pytest.raises(DataError, match=r"train\.txt:3: label 2 is outside \[0, 2\)"):
        build_dataloader(_cfg(ds_cfg), "train", class_num=2)
    loader, _ = build_dataloader(_cfg(ds_cfg), "train", class_num=3)
    assert loader.dataset.class_num == 3 and "class_num" not in ds_cfg
