"""Two CPU processes under paddle.distributed.launch (gloo): same weights, exact evaluation."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, distill_config, save_random_backbone, write_images

DRIVER = os.path.join(ROOT, "tests", "dist_driver.py")


def _launch(args, nproc, tmp_path, tag):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
           "--log_dir", str(tmp_path / f"log_{tag}"), DRIVER] + args
    if nproc == 1:
        cmd = [sys.executable, DRIVER] + args
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    logs = ""
    log_dir = tmp_path / f"log_{tag}"
    if log_dir.is_dir():
        for name in sorted(os.listdir(log_dir)):
            logs += (log_dir / name).read_text(errors="replace")[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    return proc


def test_two_processes_train_identically_and_evaluate_exactly(tmp_path):
    root = str(tmp_path / "data")
    # 27 eval images: not divisible by 2 ranks, so padding or duplication would show
    paths = write_images(root, 27, 4, unlabeled=6)
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"), class_num=4)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=1)
    cfg["DataLoader"]["Eval"]["sampler"]["batch_size"] = 5
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _launch(["train", str(path), str(tmp_path)], 2, tmp_path, "train")
    w0 = np.load(tmp_path / "weights_rank0.npz")
    w1 = np.load(tmp_path / "weights_rank1.npz")
    assert sorted(w0.files) == sorted(w1.files)
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    ckpt = str(tmp_path / "out" / "DistillationModel" / "latest")
    _launch(["eval", str(path), str(tmp_path), ckpt], 2, tmp_path, "eval2")
    _launch(["eval", str(path), str(tmp_path), ckpt], 1, tmp_path, "eval1")
    single = json.loads((tmp_path / "eval_ws1_rank0.json").read_text())
    for rank in (0, 1):
        multi = json.loads((tmp_path / f"eval_ws2_rank{rank}.json").read_text())
        assert multi["samples"] == single["samples"] == 27
        for key in ("top1", "top2", "loss"):
            assert multi[key] == pytest.approx(single[key], abs=1e-6), key
