"""Trainer end to end on tiny images: logs, exact resume, NaN stop, eval CLI, shipped configs."""
import copy
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ppssld.utils.config import load_config
from ppssld.engine.builder import build_trainer
from ppssld.engine.checkpoint import Checkpointer
from ppssld.engine.trainer import TrainingDivergedError
from tests.conftest import ROOT, distill_config, loader_cfg, save_random_backbone, shipped_configs


@pytest.fixture
def setup(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4)
    return root, paths, teacher, tmp_path


def _student_state(trainer):
    return {k: v.numpy().copy() for k, v in trainer.model.state_dict().items() if k.startswith("Student.")}


def test_one_epoch_logs_paddleclas_lines_and_writes_checkpoints(setup, caplog):
    root, paths, teacher, tmp = setup
    cfg = distill_config(root, paths, teacher, str(tmp / "out"), epochs=1)
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.INFO, logger="ppssld"):
        trainer = build_trainer(cfg)
        assert trainer.train_loader.dataset.num_unlabeled == 8
        result = trainer.fit()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(r"\[Train\]\[Epoch 1/1\]\[Iter: 4/4\]lr\(\w+\): [\d.]+, .*JSDiv.*ips: [\d.]+ samples/s, eta: ",
                     text), text
    assert re.search(r"\[Train\]\[Epoch 1/1\]\[Avg\].*loss: [\d.]+", text)
    assert re.search(r"\[Eval\]\[Epoch 1\]\[Avg\].*top1: \d\.\d{5}, top2: \d\.\d{5}", text)
    out = tmp / "out" / "DistillationModel"
    for tag in ("latest", "best_model", "epoch_1"):
        for ext in (".pdparams", ".pdopt", ".pdstates"):
            assert (out / (tag + ext)).is_file(), tag + ext
    assert result["best_epoch"] == 1 and 0.0 <= result["best_metric"] <= 1.0
    assert result["history"][0]["eval"]["samples"] == 24


def test_one_epoch_plus_resume_equals_two_epochs(setup):
    root, paths, teacher, tmp = setup
    straight = build_trainer(distill_config(root, paths, teacher, str(tmp / "a"), epochs=2))
    straight.fit()
    first = build_trainer(distill_config(root, paths, teacher, str(tmp / "b"), epochs=2))
    first.fit(stop_after_epoch=1)
    cfg = distill_config(root, paths, teacher, str(tmp / "b"), epochs=2)
    cfg["Global"]["checkpoints"] = str(tmp / "b" / "DistillationModel" / "latest")
    resumed = build_trainer(cfg)
    assert resumed.start_epoch == 2
    resumed.fit()
    a, b = _student_state(straight), _student_state(resumed)
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-6, worst
    changed = _student_state(first)
    assert any(not np.allclose(changed[k], b[k]) for k in b)  # epoch 2 did train


def test_a_resume_with_nothing_left_says_so_and_how_to_go_on(setup, caplog):
    root, paths, teacher, tmp = setup
    build_trainer(distill_config(root, paths, teacher, str(tmp / "c"), epochs=1)).fit()
    cfg = distill_config(root, paths, teacher, str(tmp / "c"), epochs=1)
    cfg["Global"]["checkpoints"] = str(tmp / "c" / "DistillationModel" / "latest")
    logging.getLogger("ppssld").propagate = True
    caplog.clear()  # only the resumed run's records (the first run's may have propagated)
    with caplog.at_level(logging.INFO, logger="ppssld"):
        result = build_trainer(cfg).fit()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "the run is already complete" in text and "-o Global.epochs=<more than 1>" in text, text
    assert "[Train]" not in text and result["history"] == []


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(setup):
    root, paths, teacher, tmp = setup
    good = build_trainer(distill_config(root, paths, teacher, str(tmp / "n"), epochs=2))
    good.fit(stop_after_epoch=1)
    cfg = distill_config(root, paths, teacher, str(tmp / "n"), epochs=2)
    cfg["Global"]["checkpoints"] = str(tmp / "n" / "DistillationModel" / "latest")
    cfg["Loss"]["Train"][0]["JSDivLoss"]["weight"] = float("nan")
    bad = build_trainer(cfg)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, step 1/4"):
        bad.fit()
    model = build_trainer(distill_config(root, paths, teacher, str(tmp / "other"), epochs=2)).model
    states = Checkpointer.load(str(tmp / "n" / "DistillationModel" / "latest"), model, restore_rng=False)
    assert states["epoch"] == 1


def test_config_is_not_mutated_by_building(setup):
    root, paths, teacher, tmp = setup
    cfg = distill_config(root, paths, teacher, str(tmp / "m"), epochs=1)
    frozen = copy.deepcopy(cfg)
    build_trainer(cfg)
    assert cfg == frozen


def test_eval_cli_ends_with_eval_avg_line(setup):
    root, paths, teacher, tmp = setup
    cfg = distill_config(root, paths, teacher, str(tmp / "e"), epochs=1)
    build_trainer(cfg).fit()
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ckpt = str(tmp / "e" / "DistillationModel" / "best_model")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py"), "-c", str(path),
                           "-o", f"Global.pretrained_model={ckpt}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert re.search(r"\[Eval\]\[Epoch 0\]\[Avg\]DistillationGTCELoss.*loss: [\d.]+, top1: \d\.\d{5}, top2: ",
                     lines[-1]), lines[-3:]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py"), "-c", str(path),
                           "-o", "Global.epoch=3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Did you mean 'epochs'" in proc.stderr


SHIPPED = shipped_configs()


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.relpath(p, ROOT) for p in SHIPPED])
def test_shipped_config_builds_and_runs_one_step(path, tiny_data, tmp_path):
    """Each shipped config loads as it is, then runs one step on two tiny images."""
    root, paths = tiny_data
    cfg = load_config(path)
    arch = cfg["Arch"]
    if arch["name"] == "DistillationModel":
        for i, item in enumerate(arch["models"]):
            (name, sub), = item.items()
            if (arch.get("freeze_params_list") or [False] * 9)[i]:
                weights = save_random_backbone(str(tmp_path / f"{name}.pdparams"), sub["name"], sub["class_num"])
                sub["pretrained"] = weights
            elif sub.get("pretrained") is True:
                sub["pretrained"] = False
    cfg["Global"].update({"output_dir": str(tmp_path / "out"), "device": "cpu", "epochs": 1,
                          "pretrained_model": None, "checkpoints": None})
    cfg["AMP"] = {"use_amp": False}
    two = tmp_path / "two.txt"
    two.write_text("images/00000.png 0\nimages/00001.png 1\n")
    train = loader_cfg(root, str(two), True, batch_size=2, size=32)
    train["dataset"]["transform_ops"] = cfg["DataLoader"]["Train"]["dataset"]["transform_ops"]
    for op in train["dataset"]["transform_ops"]:
        (name, params), = op.items()
        for key in ("size", "resize_short"):
            if params and key in params:
                params[key] = 32
    cfg["DataLoader"] = {"Train": train}
    trainer = build_trainer(cfg)
    before = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items() if not k.startswith("Teacher.")}
    averages = trainer.train_one_epoch(1)
    assert np.isfinite(averages["loss"])
    after = trainer.model.state_dict()
    assert any(not np.array_equal(before[k], after[k].numpy()) for k in before)


def test_visualdl_scalars_and_amp_warning_on_cpu(setup, caplog):
    root, paths, teacher, tmp = setup
    cfg = distill_config(root, paths, teacher, str(tmp / "v"), epochs=1)
    cfg["Global"]["use_visualdl"] = True
    cfg["AMP"] = {"use_amp": True, "level": "O1", "scale_loss": 128.0, "use_dynamic_loss_scaling": True}
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.WARNING, logger="ppssld"):
        trainer = build_trainer(cfg)
    assert trainer.amp is None and trainer.scaler is None
    assert any("AMP.use_amp is True but training runs on CPU" in r.getMessage() for r in caplog.records)
    trainer.fit()
    trainer.visualdl.close()
    logs = [f for f in os.listdir(tmp / "v" / "vdl") if f.startswith("vdlrecords")]
    assert logs and os.path.getsize(tmp / "v" / "vdl" / logs[0]) > 100
    from visualdl import LogReader

    tags = LogReader(file_path=str(tmp / "v" / "vdl" / logs[0])).get_tags()
    scalars = set(tags.get("scalar", []))
    assert {"train/loss", "train/lr", "eval/top1"} <= scalars, scalars
