"""The main job's distill stage from the soft-label cache (``distill.soft_label_cache: true``): it writes the cache
into its stage folder, trains without building the teacher, and its student equals the online one (V = epochs,
K = class count, float32); the earlier stages are not re-run for it, and a re-run skips it."""
import json
import logging
import os

import numpy as np
import paddle
import pytest
import yaml

from ppssld.recipes.ssld import Pipeline, load_pipeline_config
from ppssld.utils.errors import ConfigError
from tests.conftest import ROOT, save_random_backbone

QS = os.path.join(ROOT, "ppcls_configs", "quick_start", "fashion_mnist")
FAST = ["Global.epochs=2", "DataLoader.Train.sampler.batch_size=64", "DataLoader.Train.loader.num_workers=0",
        "DataLoader.Eval.loader.num_workers=0", "Global.print_batch_step=100",
        "Optimizer.lr.learning_rate=0.001"]  # a small step: 1e-7 teacher rounding is not amplified


def _config(tmp_path, student, cached):
    cfg = {"output_dir": str(tmp_path / "run"),
           "data": {"dataset": "digits", "labeled": 100, "unlabeled": 156, "seed": 0},
           "teacher": {"pretrained": str(tmp_path / "teacher.pdparams")}, "mine": {"enabled": False},
           "distill": {"config": os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"),
                       "overrides": FAST + [f"Arch.models.Student.pretrained={student}"],
                       "soft_label_cache": cached},
           "export": {"enabled": False}}
    if cached:  # the fine-tune (JS to the teacher on the labeled images) can read its own cache too
        cfg["finetune"] = {"config": os.path.join(QS, "finetune_R18_MV3_small_x0_35.yaml"),
                           "overrides": FAST + ["Global.epochs=1"], "soft_label_cache": True}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_pipeline_config(str(path))


def _student(folder):
    return {k: v.numpy() for k, v in paddle.load(str(folder / "DistillationModel" / "latest.pdparams")).items()
            if k.startswith("Student.")}


def _distance(a, b):
    return float(np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def test_cached_distill_stage_equals_the_online_one(tmp_path, caplog):
    save_random_backbone(str(tmp_path / "teacher.pdparams"), name="ResNet18", class_num=10, seed=1)
    student = save_random_backbone(str(tmp_path / "student.pdparams"), name="MobileNetV3_small_x0_35",
                                   class_num=10, seed=2)  # the same start online and from the cache
    out = tmp_path / "run"
    Pipeline(_config(tmp_path, student, False)).run()
    assert not (out / "distill" / "soft_labels").exists()
    caplog.set_level(logging.INFO)
    results = Pipeline(_config(tmp_path, student, True)).run()
    log = caplog.text
    assert "data: already complete with the same inputs, skipped" in log
    assert "distill: inputs changed since it was built: settings.distill.soft_label_cache: (absent) -> true" in log
    assert "the teacher Teacher is not built" in log, log[-2000:]
    cache = results["distill"]["soft_label_cache"]
    manifest = json.loads((out / "distill" / "soft_labels" / "manifest.json").read_text())
    assert cache["dir"] == str(out / "distill" / "soft_labels") and cache["images"] == 2 * 256
    assert (manifest["views"], manifest["topk"], manifest["prob_dtype"], manifest["num_images"]) == (
        2, 10, "float32", 256)
    used = (out / "distill" / "DistillationModel" / "config.yaml").read_text()
    assert f"soft_label_cache: {out / 'distill' / 'soft_labels'}" in used
    online, cached = _student(out / ".stale" / "distill"), _student(out / "distill")
    start = {k: v.numpy() for k, v in paddle.load(student).items()}
    moved = _distance(online, {k: start[k[len("Student."):]] for k in online})
    # float tolerance: the teacher's softmax depends on the other images of its batch by ~1e-7 (oneDNN sums);
    # measured here 1.1e-4 apart for 97 moved (1e-6) at this small step (at 0.01, 8 steps of a random student
    # amplify that 1e-7 to 5%: the trajectory, not the targets, which agree to 1.2e-7 step by step)
    apart = _distance(online, cached)
    assert apart < 1e-4 * moved, (apart, moved)
    finetune = results["finetune"]["soft_label_cache"]
    assert (finetune["views"], finetune["images"]) == (1, 100)  # one epoch over the 100 labeled images
    assert "finetune: the given teacher's top-1 is not evaluated" not in log  # only the distill stage reports it
    caplog.clear()
    Pipeline(_config(tmp_path, student, True)).run()  # a re-run skips them (caches and all)
    for stage in ("distill", "finetune"):
        assert f"{stage}: already complete with the same inputs, skipped" in caplog.text


def test_soft_label_cache_key_must_be_a_bool(tmp_path):
    save_random_backbone(str(tmp_path / "teacher.pdparams"), name="ResNet18", class_num=10, seed=1)
    with pytest.raises(ConfigError, match=r"distill\.soft_label_cache must be true or false, got 'yes'"):
        _config(tmp_path, "s.pdparams", "yes")
