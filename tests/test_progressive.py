"""Progressive training (``Global.train_mode: progressive``): stages, checks, a tiny EfficientNetV2_S run and a
killed run resumed inside a stage."""
import copy
import os
import re
import signal
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from ppssld.data.transforms import build_transforms
from ppssld.data.transforms.progressive import stage_count, stage_ops
from ppssld.engine.builder import build_trainer, validate
from ppssld.engine.progressive import ProgressiveTraining, check_progressive, stage_ends, stage_of
from ppssld.utils.config import load_config
from ppssld.utils.errors import ConfigError
from tests.conftest import ROOT, write_images

SIZES = [32, 40, 48, 56]
MAGNITUDES = [5.0, 8.3333333333, 11.66666666667, 15.0]
RATES = [0.1, 0.16666666666666669, 0.23333333333333334, 0.3]  # EfficientNetV2_S's head: linspace(0.1, 0.3, 4)


def _ops(sizes=SIZES, magnitudes=MAGNITUDES):
    return [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
            {"RandCropImage": {"size": sizes[0], "progress_size": sizes, "scale": [0.05, 1.0]}},
            {"RandFlipImage": {"flip_code": 1}},
            {"RandAugmentV2": {"num_layers": 2, "magnitude": magnitudes[0], "progress_magnitude": magnitudes}},
            {"NormalizeImage": {"scale": 1.0, "mean": [128.0] * 3, "std": [128.0] * 3, "order": ""}},
            {"ToCHWImage": None}]


def _config(root, paths, out):
    """An EfficientNetV2_S progressive config in PaddleClas's layout (sizes are set again by -o overrides)."""
    loader = lambda ops, lst, train: {  # noqa: E731
        "dataset": {"name": "ImageNetDataset", "image_root": root, "cls_label_path": lst, "transform_ops": ops},
        "sampler": {"name": "DistributedBatchSampler", "batch_size": 128, "drop_last": train, "shuffle": train},
        "loader": {"num_workers": 4, "use_shared_memory": True}}
    eval_ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
                {"CropImageAtRatio": {"size": 384, "pad": 32, "interpolation": "bilinear"}},
                {"NormalizeImage": {"scale": 1.0, "mean": [128.0] * 3, "std": [128.0] * 3, "order": ""}},
                {"ToCHWImage": None}]
    return {"Global": {"output_dir": out, "device": "cpu", "epochs": 350, "save_interval": 1, "seed": 5,
                       "eval_during_train": True, "print_batch_step": 20, "train_mode": "progressive",
                       "image_shape": [3, 384, 384]},
            "Arch": {"name": "EfficientNetV2_S", "class_num": 1000},
            "Loss": {"Train": [{"CELoss": {"weight": 1.0, "epsilon": 0.1}}], "Eval": [{"CELoss": {"weight": 1.0}}]},
            "Optimizer": {"name": "Momentum", "momentum": 0.9,
                          "lr": {"name": "Cosine", "learning_rate": 0.65, "warmup_epoch": 5},
                          "regularizer": {"name": "L2", "coeff": 1e-5}},
            "DataLoader": {"Train": loader(_ops([171, 214, 257, 300], MAGNITUDES), paths["train_list.txt"], True),
                           "Eval": loader(eval_ops, paths["val_list.txt"], False)},
            "Metric": {"Eval": [{"TopkAcc": {"topk": [1, 5]}}]}}


TINY = ["Global.epochs=8", "Global.eval_during_train=False", "Global.save_interval=3", "Global.print_batch_step=1",
        "Arch.class_num=4", "Optimizer.lr.learning_rate=0.0001",
        f"DataLoader.Train.dataset.transform_ops.RandCropImage.size={SIZES[0]}",
        f"DataLoader.Train.dataset.transform_ops.RandCropImage.progress_size={SIZES}",
        "DataLoader.Train.sampler.batch_size=4", "DataLoader.Train.loader.num_workers=0",
        "DataLoader.Eval.dataset.transform_ops.CropImageAtRatio.size=32", "DataLoader.Eval.loader.num_workers=0"]


def test_stage_ends_follow_paddleclas_formula():
    assert stage_ends(350, 4) == [87, 175, 262, 350]
    assert [stage_of(e, 350, 4) for e in (1, 87, 88, 175, 176, 262, 263, 350)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [stage_of(e, 8, 4) for e in range(1, 9)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [stage_of(e, 2, 4) for e in (1, 2)] == [1, 3]  # too few epochs: stages 1 and 3 get none
    assert [stage_of(e, 6, 3) for e in range(1, 7)] == [0, 0, 1, 1, 2, 2]


def test_stage_ops_copy_the_list_and_find_the_ops_by_name():
    ops = _ops()
    moved = [ops[0], ops[3], ops[2], ops[1]] + ops[4:]  # RandAugmentV2 before the crop: PaddleClas would fail
    before = copy.deepcopy(moved)
    third = stage_ops(moved, 2)
    assert moved == before
    assert third[3]["RandCropImage"]["size"] == 48 and third[1]["RandAugmentV2"]["magnitude"] == 11.66666666667
    chain = dict(build_transforms(third).ops)
    assert chain["RandCropImage"].size == (48, 48) and chain["RandAugmentV2"].magnitude == 11.66666666667
    assert stage_count(moved) == 4


def test_progressive_training_switches_transform_and_dropout_per_stage():
    import paddle

    class Head(paddle.nn.Layer):  # PaddleClas's rule: a layer named Head with a list of rates
        def __init__(self):
            super().__init__()
            self.dropout_rate = RATES
            self._dropout = paddle.nn.Dropout(RATES[0])

    head = Head()
    dataset = SimpleNamespace(transform=None)
    progressive = ProgressiveTraining(_ops(), 8, dataset, [("head", head)])
    seen = []
    for epoch in range(1, 9):
        settings = progressive.begin_epoch(epoch)
        ops = dict(dataset.transform.ops)
        seen.append((settings["stage"], ops["RandCropImage"].size[0], ops["RandAugmentV2"].magnitude, head._dropout.p))
    assert seen == [(k // 2, SIZES[k // 2], MAGNITUDES[k // 2], RATES[k // 2]) for k in range(8)]
    with pytest.raises(ConfigError, match="lists 3 stages but the head head has 4 dropout rates"):
        ProgressiveTraining(_ops(SIZES[:3], MAGNITUDES[:3]), 8, dataset, [("head", head)])


def test_checks_name_the_key(tmp_path):
    root = str(tmp_path / "data")
    paths = write_images(root, 4, 4)
    cfg = _config(root, paths, str(tmp_path / "out"))
    assert check_progressive(cfg) == 4
    validate(cfg)
    bare = copy.deepcopy(cfg)
    for op in bare["DataLoader"]["Train"]["dataset"]["transform_ops"]:
        for params in op.values():
            (params or {}).pop("progress_size", None), (params or {}).pop("progress_magnitude", None)
    with pytest.raises(ConfigError, match="progressive needs the stages in DataLoader.Train.dataset.transform_ops"):
        check_progressive(bare)
    uneven = copy.deepcopy(cfg)
    uneven["DataLoader"]["Train"]["dataset"]["transform_ops"][1]["RandCropImage"]["progress_size"] = [8, 16]
    with pytest.raises(ConfigError, match="progress_magnitude has 4 and RandCropImage.progress_size has 2"):
        check_progressive(uneven)
    multi = copy.deepcopy(cfg)
    multi["DataLoader"]["Train"]["dataset"]["name"] = "MultiScaleDataset"
    with pytest.raises(ConfigError, match="MultiScaleDataset"):
        check_progressive(multi)
    from ppssld.cache.rules import check_cacheable

    cached = copy.deepcopy(cfg)
    cached["Arch"] = {"name": "DistillationModel", "models": [{"Teacher": {"name": "ResNet18", "pretrained": "t"}},
                                                              {"Student": {"name": "EfficientNetV2_S"}}],
                      "freeze_params_list": [True, False]}
    with pytest.raises(ConfigError, match="progressive changes the training image size"):
        check_cacheable(cached)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="Global.train_mode must be 'progressive'"):
        load_config(str(path), ["Global.train_mode=metabin"])
    with pytest.raises(ConfigError, match=r"progress_size\[1\] must be a positive int"):
        validate(load_config(str(path), [
            "DataLoader.Train.dataset.transform_ops.RandCropImage.progress_size=[8,0,8,8]"]))
    with pytest.raises(ConfigError, match=r"progress_magnitude\[3\] must lie in \[0, 20\]"):
        validate(load_config(str(path), [
            "DataLoader.Train.dataset.transform_ops.RandAugmentV2.progress_magnitude=[1,2,3,25]"]))


def test_without_train_mode_the_lists_are_ignored_with_a_warning(tmp_path, caplog):
    root = str(tmp_path / "data")
    paths = write_images(root, 4, 4)
    cfg = _config(root, paths, str(tmp_path / "out"))
    del cfg["Global"]["train_mode"]
    assert check_progressive(cfg) is None
    assert "Global.train_mode is not progressive: they are ignored" in caplog.text


def _head_of(trainer):
    return dict(trainer.model.named_sublayers())["_head"]


def _record(trainer, log):
    """Log (image side, head dropout) at every training forward."""
    head = _head_of(trainer)
    trainer.model.register_forward_pre_hook(
        lambda layer, inputs: log.append((int(inputs[0].shape[-1]), head._dropout.p)) if layer.training else None)


def _kill_at_epoch_4(cmd, env, out):
    """Run tools/train.py and SIGKILL it as epoch 4 (inside stage 2) starts; returns the lines read."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines = []

    def watch():
        for line in proc.stdout:
            lines.append(line)
            if "[Train][Epoch 4/8] progressive stage 2/4" in line:
                proc.send_signal(signal.SIGKILL)
                break
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return proc, thread, lines


@pytest.mark.timeout(900)
def test_tiny_run_changes_size_at_the_boundaries_and_a_killed_run_resumes_exactly(tmp_path):
    root = str(tmp_path / "data")
    paths = write_images(root, 4, 4, size=64)
    path = tmp_path / "EfficientNetV2_S.yaml"
    path.write_text(yaml.safe_dump(_config(root, paths, str(tmp_path / "unused"))))
    # the interrupted run: a separate process, killed once epoch 4 has begun (epoch_3 is on disk)
    killed_out = str(tmp_path / "killed")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", str(path), "-o"] + TINY + [
        f"Global.output_dir={killed_out}"]
    proc, thread, lines = _kill_at_epoch_4(cmd, dict(os.environ, OMP_NUM_THREADS="1"), killed_out)
    # meanwhile the uninterrupted run, here
    straight = build_trainer(load_config(str(path), TINY + [f"Global.output_dir={tmp_path / 'straight'}"]))
    seen = []
    _record(straight, seen)
    straight.fit()
    assert seen == [(SIZES[k // 2], RATES[k // 2]) for k in range(8)]  # one step per epoch, 2 epochs per stage
    proc.wait(timeout=600)
    thread.join(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines[-20:])
    text = "".join(lines)
    assert re.search(r"\[Epoch 3/8\] progressive stage 2/4: image size 40, RandAugmentV2 magnitude "
                     r"8.3333333333, head dropout 0.166667", text), text[-3000:]
    epoch_3 = os.path.join(killed_out, "EfficientNetV2_S", "epoch_3")
    resumed = build_trainer(load_config(str(path), TINY + [f"Global.output_dir={killed_out}",
                                                           f"Global.checkpoints={epoch_3}"]))
    assert resumed.start_epoch == 4
    seen_resumed = []
    _record(resumed, seen_resumed)
    resumed.fit()
    assert seen_resumed == seen[3:]
    a = {k: v.numpy() for k, v in straight.model.state_dict().items()}
    b = {k: v.numpy() for k, v in resumed.model.state_dict().items()}
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-6, worst
    import paddle

    at_3 = paddle.load(epoch_3 + ".pdparams")
    assert max(float(np.abs(a[k] - at_3[k].numpy()).max()) for k in a) > 1e-4  # epochs 4-8 moved the weights


def test_loader_workers_see_the_new_stage(tmp_path):
    """Workers start with each epoch's iterator, so they read the stage's rebuilt transform chain."""
    from ppssld.data.loading.loader import build_dataloader

    root = str(tmp_path / "data")
    paths = write_images(root, 4, 4, size=64)
    ops = _ops([16, 24], [5.0, 9.0])
    loader, sampler = build_dataloader({"dataset": {"name": "ImageNetDataset", "image_root": root,
                                                    "cls_label_path": paths["train_list.txt"], "transform_ops": ops},
                                        "sampler": {"batch_size": 4, "shuffle": True},
                                        "loader": {"num_workers": 1, "use_shared_memory": False}}, "train")
    progressive = ProgressiveTraining(ops, 4, loader.dataset, [])
    sides = []
    for epoch in range(1, 5):
        progressive.begin_epoch(epoch)
        sampler.set_epoch(epoch)
        sides += [int(images.shape[-1]) for images, _ in loader]
    assert sides == [16, 16, 24, 24]
