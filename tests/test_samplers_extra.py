"""RASampler (repeated augmentation) and MultiScaleSampler + MultiScaleDataset (multi-scale training)."""
import collections

import numpy as np
import pytest

from ppssld.data.loading.loader import build_dataloader
from ppssld.data.loading.sampler import RASampler, epoch_permutation
from ppssld.utils.errors import ConfigError
from tests.conftest import loader_cfg


class _Sized:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_ra_sampler_repeats_each_image_across_ranks():
    size, ranks, repeats = 512, 4, 3
    per_rank = [RASampler(_Sized(size), 16, shuffle=True, num_replicas=ranks, rank=r, seed=5, num_repeats=repeats)
                for r in range(ranks)]
    for s in per_rank:
        s.set_epoch(2)
    taken = [s.rank_indices() for s in per_rank]
    assert all(len(t) == size // 256 * 256 // ranks == 128 for t in taken)
    assert all(len(s) == 8 for s in per_rank)
    # reference: the (seed, epoch) permutation, each element repeated, dealt round-robin
    ref = np.repeat(epoch_permutation(size, 5, 2), repeats)
    for r in range(ranks):
        assert taken[r] == ref[r::ranks][:128].tolist()
    # the copies of one image go to different ranks
    first = ref[:repeats * 10].reshape(10, repeats)
    assert all(len(set(np.where(np.isin(ref[:repeats * 10], [img]))[0] % ranks)) == repeats for img in first[:, 0])
    other = RASampler(_Sized(size), 16, shuffle=True, num_replicas=ranks, rank=0, seed=5)
    other.set_epoch(3)
    assert other.rank_indices() != taken[0]
    small = RASampler(_Sized(10), 4, num_replicas=2, rank=0)
    assert small.rank_indices() == [0, 0, 1, 2, 2]  # 0,0,0,1,1,1,2,2,2,.. dealt to 2 ranks; under 256 images ceil(10 / 2) kept
    with pytest.raises(ConfigError, match="RASampler repeats training images"):
        RASampler(_Sized(10), 4, num_replicas=1, rank=0, mode="eval")


def _multi_scale_cfg(root, list_path, scales, first_bs=4):
    cfg = loader_cfg(root, list_path, True, size=32)
    cfg["dataset"]["name"] = "MultiScaleDataset"
    cfg["sampler"] = {"name": "MultiScaleSampler", "scales": scales, "first_bs": first_bs, "divided_factor": 8,
                      "is_training": True}
    return cfg


def test_multi_scale_batches_have_one_size_and_keep_pixels_per_batch(tiny_data):
    root, paths = tiny_data
    loader, sampler = build_dataloader(_multi_scale_cfg(root, paths["train_list.txt"], [16, 24, [33, 17]]),
                                       "train", seed=3)
    assert [p for p in sampler.plans] == [(16, 16, 4), (24, 24, 1), (32, 16, 2)]
    seen = collections.Counter()
    shapes = set()
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        steps = 0
        for images, labels in loader:
            h, w = images.shape[2:]
            assert (w, h, images.shape[0]) in sampler.plans
            shapes.add((w, h))
            steps += 1
            if epoch == 1:
                seen.update(labels.numpy().tolist())
        assert steps == len(sampler)  # the same number of steps every epoch
    assert len(shapes) >= 2
    first = [b for b in sampler]
    sampler.set_epoch(1)
    assert [[i for _, _, i in b] for b in sampler] != [[i for _, _, i in b] for b in first]
    covered = {i for b in sampler for _, _, i in b}
    assert covered == set(range(24))  # every image of the epoch is used


def test_multi_scale_errors(tiny_data):
    root, paths = tiny_data
    cfg = _multi_scale_cfg(root, paths["train_list.txt"], [16])
    cfg["dataset"]["name"] = "ImageNetDataset"
    with pytest.raises(ConfigError, match="MultiScaleSampler needs the dataset MultiScaleDataset"):
        build_dataloader(cfg, "train")
    cfg = _multi_scale_cfg(root, paths["train_list.txt"], [16])
    cfg["dataset"]["transform_ops"] = [{"DecodeImage": None}, {"ToCHWImage": None}]
    with pytest.raises(ConfigError, match="needs one of RandCropImage, ResizeImage, CropImage"):
        build_dataloader(cfg, "train")
    cfg = _multi_scale_cfg(root, paths["train_list.txt"], ["big"])
    with pytest.raises(ConfigError, match="scales: 'big' is neither"):
        build_dataloader(cfg, "train")
