"""Progressive training against PaddleClas's own code (a PaddleClas checkout; skipped without one).

The schedule: PaddleClas's ``train_epoch_progressive`` runs on a stub engine (its data loader builder and
epoch loop replaced by recorders) with PaddleClas's own EfficientNetV2_S, and the image size, magnitude
and head dropout it sets for each epoch are compared with ppssld's on the same config. The ops:
``RandAugmentV2`` and ``CropImageAtRatio`` against PaddleClas's classes, pixel for pixel.
"""
import copy
import os
import random
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ppssld.arch.build import build_model
from ppssld.arch.head_dropout import stage_dropout_heads
from ppssld.data.transforms.randaugment_v2 import OPS, SIGNED, apply_v2, levels
from ppssld.data.transforms import build_transforms
from ppssld.engine.progressive import OPS_KEY, ProgressiveTraining
from ppssld.utils.config import load_config

CANDIDATES = [os.environ.get("PADDLECLAS_DIR"), "/work/paddleclas", "/work/paddleclas_src"]
SRC = next((p for p in CANDIDATES if p and os.path.isfile(os.path.join(p, "ppcls", "engine", "train",
                                                                         "train_progressive.py"))), None)
pytestmark = pytest.mark.skipif(SRC is None, reason="no PaddleClas checkout (set PADDLECLAS_DIR)")
CONFIG = os.path.join(SRC or "", "ppcls", "configs", "ImageNet", "EfficientNetV2", "EfficientNetV2_S.yaml")
EPOCH_COUNTS = (350, 1, 2, 3, 5, 8, 10, 13)


@pytest.fixture(scope="module")
def ppcls():
    """PaddleClas's modules from the checkout (its logger initialised, as its engine does)."""
    if SRC not in sys.path:
        sys.path.append(SRC)  # last: ``paddleclas`` stays the installed package ppssld's zoo imports
    from ppcls.arch.backbone.model_zoo import efficientnet_v2
    from ppcls.data.preprocess.ops import operators, randaugment
    from ppcls.engine.train import train_progressive
    from ppcls.utils import logger

    logger.init_logger(log_file=None)
    return SimpleNamespace(progressive=train_progressive, effnet=efficientnet_v2, randaugment=randaugment,
                           operators=operators)


def _paddleclas_schedule(ppcls, monkeypatch, config, model, epochs):
    """What PaddleClas's progressive epoch sets at each epoch 1..epochs: (size, magnitude, dropout, stage).

    Each epoch runs on a fresh engine, as after a resume at that epoch: PaddleClas's loop only reaches its
    logging line when the epoch starts a stage (see test_paddleclas_loop_fails_on_an_epoch_inside_a_stage).
    """
    built = []

    def record(cfg, mode, device, use_dali, seed):
        ops = cfg[mode]["dataset"]["transform_ops"]
        built.append((ops[1]["RandCropImage"]["size"], ops[3]["RandAugmentV2"]["magnitude"], seed))
        return []

    monkeypatch.setattr(ppcls.progressive, "build_dataloader", record)
    monkeypatch.setattr(ppcls.progressive, "train_epoch", lambda engine, epoch, step: None)
    head = next(m for m in model.sublayers() if type(m).__name__ == "Head")
    out = []
    for epoch in range(1, epochs + 1):
        cfg = copy.deepcopy(config)
        cfg["Global"]["epochs"] = epochs
        engine = SimpleNamespace(config=cfg, model=model, device=None, use_dali=False)
        ppcls.progressive.train_epoch_progressive(engine, epoch, 1)
        out.append((built[-1][0], built[-1][1], head._dropout.p, engine.last_stage))
    return out


@pytest.mark.timeout(600)
def test_schedule_equals_paddleclas_train_epoch_progressive(ppcls, monkeypatch):
    import yaml

    with open(CONFIG, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    theirs_model = ppcls.effnet.EfficientNetV2_S(class_num=10)
    config = load_config(CONFIG, ["Global.device=cpu", "Arch.class_num=10"])
    ours_model = build_model(config["Arch"])
    heads = stage_dropout_heads(ours_model)
    assert [name for name, _ in heads] == ["_head"]
    for epochs in EPOCH_COUNTS:
        theirs = _paddleclas_schedule(ppcls, monkeypatch, raw, theirs_model, epochs)
        dataset = SimpleNamespace(transform=None)
        progressive = ProgressiveTraining(config["DataLoader"]["Train"]["dataset"]["transform_ops"], epochs,
                                          dataset, heads)
        ours = []
        for epoch in range(1, epochs + 1):
            settings = progressive.begin_epoch(epoch)
            ops = dict(dataset.transform.ops)
            assert ops["RandCropImage"].size[0] == ops["RandCropImage"].size[1]
            ours.append((ops["RandCropImage"].size[0], ops["RandAugmentV2"].magnitude, heads[0][1]._dropout.p,
                         settings["stage"]))
        assert ours == theirs, epochs
    full = _paddleclas_schedule(ppcls, monkeypatch, raw, theirs_model, 350)
    firsts = {stage: next(i + 1 for i, row in enumerate(full) if row[3] == stage) for stage in range(4)}
    assert firsts == {0: 1, 1: 88, 2: 176, 3: 263}  # what both compute for the shipped 350 epochs
    seeds = []
    monkeypatch.setattr(ppcls.progressive, "build_dataloader", lambda cfg, mode, device, use_dali, seed: seeds.append(
        seed) or [])
    for epoch in (3, 4):  # the first and second epoch of stage 2 of 8 epochs, each as the first after a resume
        cfg = copy.deepcopy(raw)
        cfg["Global"]["epochs"] = 8
        ppcls.progressive.train_epoch_progressive(SimpleNamespace(config=cfg, model=theirs_model, device=None,
                                                                  use_dali=False), epoch, 1)
    # PaddleClas seeds the stage's loader workers with the epoch it is built at: an uninterrupted run trains
    # epoch 4 with the loader of epoch 3 (seed 3), a run resumed at epoch 4 with seed 4 (and its checkpoints
    # hold no random state), so its resume inside a stage is not exact
    assert seeds == [3, 4]
    assert sorted({row[:3] for row in full}) == [(171, 5.0, 0.1), (214, 8.3333333333, 0.16666666666666669),
                                                  (257, 11.66666666667, 0.23333333333333334), (300, 15.0, 0.3)]


def test_paddleclas_loop_fails_on_an_epoch_inside_a_stage(ppcls, monkeypatch):
    """PaddleClas's loop as shipped: the second epoch of a stage never builds its logging values."""
    import yaml

    with open(CONFIG, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    monkeypatch.setattr(ppcls.progressive, "build_dataloader", lambda *a, **k: [])
    monkeypatch.setattr(ppcls.progressive, "train_epoch", lambda engine, epoch, step: None)
    engine = SimpleNamespace(config=raw, model=ppcls.effnet.EfficientNetV2_S(class_num=10), device=None,
                             use_dali=False)
    ppcls.progressive.train_epoch_progressive(engine, 1, 1)
    with pytest.raises(UnboundLocalError, match="cur_magnitude"):
        ppcls.progressive.train_epoch_progressive(engine, 2, 1)


@pytest.mark.parametrize("magnitude", [5.0, 8.3333333333, 11.66666666667, 15.0, 0.0])
def test_randaugment_v2_levels_equal_paddleclas(ppcls, magnitude):
    theirs = ppcls.randaugment.RandAugmentV2(num_layers=2, magnitude=magnitude)
    assert levels(magnitude) == theirs.level_map
    assert sorted(OPS) == sorted(theirs.level_map)


@pytest.mark.parametrize("magnitude", [5.0, 15.0])
@pytest.mark.parametrize("name", OPS)
def test_randaugment_v2_ops_equal_paddleclas_pixel_for_pixel(ppcls, monkeypatch, name, magnitude):
    rng = np.random.RandomState(3)
    img = Image.fromarray(rng.randint(0, 256, (37, 50, 3), np.uint8))
    theirs_op = ppcls.randaugment.RandAugmentV2(num_layers=1, magnitude=magnitude)
    centre = (11, 29)
    draws = iter(centre)
    monkeypatch.setattr(ppcls.randaugment.np.random, "randint", lambda low, high: next(draws))
    for seed in range(4):
        random.seed(seed)  # PaddleClas draws the sign with random.choice
        theirs = np.asarray(theirs_op.func[name](img, theirs_op.level_map[name]))
        sign = random.Random(seed).choice((-1, 1)) if name in SIGNED else 1
        ours = np.asarray(apply_v2(img, name, levels(magnitude)[name], sign, (128, 128, 128), centre))
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{name} seed {seed}")
        draws = iter(centre)
    assert name != "cutout" or not np.array_equal(ours, np.asarray(img))  # the square was painted


@pytest.mark.parametrize("size, pad, shape", [(32, 8, (50, 37)), (24, 0, (30, 41)), (384, 32, (300, 500))])
def test_crop_image_at_ratio_equals_paddleclas(ppcls, size, pad, shape):
    img = np.random.RandomState(0).randint(0, 256, shape + (3,), np.uint8)
    theirs = ppcls.operators.CropImageAtRatio(size=size, pad=pad)(img)
    ours = build_transforms([{"CropImageAtRatio": {"size": size, "pad": pad}}])(img)
    np.testing.assert_array_equal(ours, theirs)


def test_the_shipped_config_validates_and_names_its_stages():
    from ppssld.engine.builder import validate
    from ppssld.engine.progressive import check_progressive

    config = load_config(CONFIG, ["Global.device=cpu"])
    validate(config)
    assert check_progressive(config) == 4
    assert get_ops(config)[1]["RandCropImage"]["progress_size"] == [171, 214, 257, 300]


def get_ops(config):
    from ppssld.utils.config import get

    return get(config, OPS_KEY)
