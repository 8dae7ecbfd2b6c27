"""The main job end to end on the scikit-learn digits (tiny epochs); re-runs that skip every stage, re-run
what a changed input affects, and resume an interrupted training stage."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT

QS = os.path.join(ROOT, "ppcls_configs", "quick_start", "fashion_mnist")
FAST = ["Global.epochs=1", "DataLoader.Train.sampler.batch_size=64", "DataLoader.Train.loader.num_workers=0",
        "DataLoader.Eval.loader.num_workers=0", "Global.print_batch_step=100"]


def _readme_block() -> str:
    """The bash block of the README's *Everyday use* section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    return text.split("## Everyday use", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]


def _files_under(folder):
    return {os.path.relpath(os.path.join(base, n), folder) for base, _d, names in os.walk(folder) for n in names}


def _run_readme_block(work, main_job):
    """Run the README's everyday block as written, from a checkout-like folder whose main job is ``main_job``:
    every line exits 0, writes only under output/everyday and leaves the main job's files as they were."""
    for name in ("tools", "deploy", "ppssld", "ppcls_configs", ".venv"):
        if os.path.exists(os.path.join(ROOT, name)):
            os.symlink(os.path.join(ROOT, name), os.path.join(work, name))
    if not os.path.exists(os.path.join(ROOT, ".venv")):  # no virtual environment: `source` gets a stand-in
        os.makedirs(os.path.join(work, ".venv", "bin"))
        with open(os.path.join(work, ".venv", "bin", "activate"), "w", encoding="utf-8") as handle:
            handle.write(f'python() {{ "{sys.executable}" "$@"; }}\n')
    before_top, before_main = set(os.listdir(work)), _files_under(main_job)
    script = "set -euo pipefail\n" + _readme_block()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=900, cwd=work, env=env)
    assert ran.returncode == 0, (ran.stdout[-3000:], ran.stderr[-3000:])
    assert set(os.listdir(work)) == before_top, set(os.listdir(work)) ^ before_top  # nothing beside output/
    assert sorted(os.listdir(os.path.join(work, "output"))) == ["everyday", "fashion_mnist_ssld"]
    assert _files_under(main_job) == before_main, _files_under(main_job) ^ before_main  # the main job untouched
    everyday = os.path.join(work, "output", "everyday")
    for made in ("my_ssld/DistillationModel/latest.pdparams", "my_ssld_2procs/DistillationModel/latest.pdparams",
                 "mined/selected_list.txt", "inference/MobileNetV3_small_x0_35_ssld_infer/inference.yml",
                 "predictions.json", "hub_modules/mv3_ssld/module.py"):
        assert os.path.isfile(os.path.join(everyday, made)), made
    assert "LAUNCH INFO" not in ran.stdout + ran.stderr


def test_pipeline_runs_every_stage_then_skips_them(tmp_path):
    out = tmp_path / "output" / "fashion_mnist_ssld"  # where the README's everyday commands look for the main job
    cfg = {"output_dir": str(out),
           "data": {"dataset": "digits", "labeled": 300, "unlabeled": 900, "seed": 0},
           "teacher": {"config": os.path.join(QS, "teacher_ResNet18.yaml"), "overrides": FAST},
           "baseline": {"enabled": True, "config": os.path.join(QS, "student_MV3_small_x0_35_ce.yaml"),
                        "overrides": FAST},
           "mine": {"k": 20, "pool": 600},  # a sample, as the main job mines (its pool_sample.txt)
           "distill": {"config": os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"), "overrides": FAST},
           "finetune": {"config": os.path.join(QS, "finetune_R18_MV3_small_x0_35.yaml"),
                        "overrides": FAST + ["Global.epochs=2", "Global.save_interval=1"]},
           "export": {"enabled": True}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, os.path.join(ROOT, "tools", "ssld_pipeline.py"), "-c", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for stage in ("data", "teacher", "baseline", "mine", "distill", "finetune", "export"):
        assert (out / stage / "stage.json").is_file(), stage
    mined = json.loads((out / "mine" / "stage.json").read_text())
    assert 0 < mined["selected"] <= 200 and mined["scored"] <= 900
    selected = (out / "mine" / "selected_list.txt").read_text().split("\n")
    assert all(len(line.split()) <= 1 or line.split()[-1] == "-1" for line in selected if line)
    export = json.loads((out / "export" / "stage.json").read_text())
    assert os.path.basename(export["model_dir"]) == "MobileNetV3_small_x0_35_ssld_infer"
    assert os.path.isfile(export["pretrained"]) and export["prediction"]["class_ids"]
    summary = (out / "summary.md").read_text()
    for label in ("| teacher ResNet18", "| CE baseline MobileNetV3_small_x0_35", "| SSLD student (JS",
                  "| SSLD student after the fine-tune", "| mined unlabeled images", "Exported `_ssld` model"):
        assert label in summary, (label, summary)
    assert "| model | top-1 (test) | vs CE baseline | parameters | inference img/s | artefact |" in proc.stdout
    results = {s: json.loads((out / s / "stage.json").read_text()) for s in ("baseline", "distill", "finetune")}
    gain = 100 * (results["finetune"]["top1"] - results["baseline"]["top1"])
    assert f"**{gain:+.2f} points**" in summary
    # the baseline saw as many images as the SSLD student (distillation + fine-tune), within one epoch of labels
    ssld_seen = results["distill"]["images_seen"] + results["finetune"]["images_seen"]
    assert abs(results["baseline"]["images_seen"] - ssld_seen) <= 300, (results["baseline"]["images_seen"], ssld_seen)
    assert [c["epoch"] for c in results["baseline"]["curve"]] == list(range(1, results["baseline"]["epochs"] + 1))
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG" and "![summary](summary.png)" in summary
    # each training stage wrote the exact config it trained with, next to its checkpoints; stage.json has overrides
    for stage, arch in (("teacher", "ResNet18"), ("baseline", "MobileNetV3_small_x0_35"),
                        ("distill", "DistillationModel"), ("finetune", "DistillationModel")):
        used = yaml.safe_load((out / stage / arch / "config.yaml").read_text())
        recorded = json.loads((out / stage / "stage.json").read_text())
        assert used["Global"]["output_dir"] == str(out / stage) and recorded["config_used"] == str(out / stage / arch /
                                                                                                  "config.yaml")
        assert f"Global.output_dir={out / stage}" in recorded["overrides"]
        text = (out / stage / arch / "config.yaml").read_text()  # no path left pointing outside the main job
        assert "./dataset/" not in text and "./output/fashion_mnist/" not in text, (stage, text)
        assert used["Global"]["save_inference_dir"] == str(out / "export")
    assert yaml.safe_load((out / "baseline" / "MobileNetV3_small_x0_35" / "config.yaml").read_text())["Global"][
        "epochs"] == results["baseline"]["epochs"]
    # one copy of the images: the teacher's list points at the student's
    assert not (out / "data" / "teacher" / "images").exists()
    teacher_lines = (out / "data" / "teacher" / "train_list.txt").read_text().split("\n")
    assert len([ln for ln in teacher_lines if ln]) == 1200  # labeled + the pool's hidden labels: every training image
    # the mining report names classes and says how often the teacher was right (the pool's labels are known here)
    report = json.loads((out / "mine" / "report.json").read_text())
    assert report["class_names"] == [str(i) for i in range(10)] or len(report["class_names"]) == 10
    right = report["teacher_right_on_mined"]
    assert right["images"] == mined["selected"] and sum(r["mined"] for r in right["per_class"]) == mined["selected"]
    assert 0 <= right["correct"] <= right["images"] and f"{100 * right['accuracy']:.2f}%" in summary
    # the showcase: predicted vs true for a few test images
    showcase = export["showcase"]
    assert len(showcase) == 5 and all("true" in row and "predicted" in row for row in showcase)
    assert summary.count("(right) |") + summary.count("(wrong) |") == 5
    # the commands printed at the end run as written
    commands = summary.split("```bash\n", 1)[1].split("```", 1)[0]
    for line in (ln for ln in commands.splitlines() if ln and not ln.startswith("#")):
        ran = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
        assert ran.returncode == 0, (line, ran.stdout[-2000:], ran.stderr[-2000:])
        if "eval.py" in line:
            assert f"top1: {results['finetune']['best_top1']:.5f}" in ran.stdout + ran.stderr, ran.stdout[-2000:]
        if "predict_cls.py" in line:
            assert showcase[0]["predicted"] in ran.stdout, ran.stdout[-2000:]
    assert "evaluating frozen model" not in proc.stdout + proc.stderr  # the teacher stage already evaluated it
    _run_readme_block(str(tmp_path), str(out))
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("already complete with the same inputs, skipped") == 7, rerun.stdout[-3000:]

    # an interrupted fine-tune (its latest is epoch 1's, no stage.json) resumes and ends where it did
    ckpt = out / "finetune" / "DistillationModel"
    final = _weights(ckpt / "latest.pdparams")
    for ext in (".pdparams", ".pdopt", ".pdstates"):
        shutil.copyfile(ckpt / ("epoch_1" + ext), ckpt / ("latest" + ext))
    (out / "finetune" / "stage.json").unlink()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "finetune: resuming the interrupted stage (same inputs)" in resumed.stdout
    assert "resumed from" in resumed.stdout and "(epoch 1)" in resumed.stdout, resumed.stdout[-3000:]
    again = _weights(ckpt / "latest.pdparams")
    for key in final:  # float rounding only (BN variances of ~1e1 differ in their last bits)
        np.testing.assert_allclose(again[key], final[key], rtol=1e-5, atol=1e-6, err_msg=key)

    # a changed mine.k re-runs mining and every later stage, not the data, teacher or baseline
    changed = subprocess.run(cmd + ["-o", "mine.k=10"], capture_output=True, text=True, timeout=600,
                             cwd=str(tmp_path))
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    log = changed.stdout
    for stage in ("data", "teacher"):
        assert f"{stage}: already complete with the same inputs, skipped" in log, log[-3000:]
    assert "mine: inputs changed since it was built: settings.mine.k: 20 -> 10" in log, log[-3000:]
    # the baseline's budget follows the mined count, so it re-runs too
    for stage, upstream in (("baseline", "mine"), ("distill", "mine"), ("finetune", "distill"),
                            ("export", "finetune")):
        assert re.search(rf"{stage}: inputs changed since it was built: .*upstream\.{upstream}", log), (stage, log)
    assert log.count("already complete with the same inputs, skipped") == 2
    assert json.loads((out / "mine" / "stage.json").read_text())["selected"] <= 100
    assert (out / ".stale" / "mine" / "stage.json").is_file()  # the old outputs were set aside, not mixed in


def _weights(path):
    import paddle

    return {k: v.numpy() for k, v in paddle.load(str(path)).items()}


def test_pipeline_config_errors_name_the_key(tmp_path):
    from ppssld.recipes.ssld import load_pipeline_config
    from ppssld.utils.errors import ConfigError

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "digits"}, "teacher": {"pretrained": "t.pdparams"},
                                    "distil": {"config": "x.yaml"}}))
    with pytest.raises(ConfigError, match="Did you mean 'distill'"):
        load_pipeline_config(str(path))
    path.write_text(yaml.safe_dump({"data": {"dataset": "digits", "labelled": 5}, "teacher": {"pretrained": "t"},
                                    "distill": {"config": "x.yaml"}}))
    with pytest.raises(ConfigError, match="Did you mean 'labeled'"):
        load_pipeline_config(str(path))
    # -o goes through the one override rule: a bad YAML value and a missing '=' are named
    path.write_text(yaml.safe_dump({"data": {"dataset": "digits"}, "distill": {"config": "x.yaml"}}))
    with pytest.raises(ConfigError, match=r"override 'mine.k=\[1,': value '\[1,' is not valid YAML"):
        load_pipeline_config(str(path), ["mine.k=[1,"])
    with pytest.raises(ConfigError, match="must look like Section.key=value"):
        load_pipeline_config(str(path), ["mine.k"])
    path.write_text("data: {dataset: digits\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_pipeline_config(str(path))


def test_shipped_pipeline_configs_validate_and_name_existing_stage_configs():
    from ppssld.recipes.ssld import load_pipeline_config
    from tests.conftest import shipped_configs

    paths = shipped_configs(pipelines=True)
    assert paths
    for path in paths:
        cfg = load_pipeline_config(path)
        for stage in ("teacher", "baseline", "distill", "finetune"):
            if (cfg.get(stage) or {}).get("config"):
                assert os.path.isfile(os.path.join(ROOT, cfg[stage]["config"])), (path, stage)


def test_pipeline_with_a_given_teacher_reports_its_top1_once(tmp_path):
    """A teacher passed as weights is evaluated once (when distillation starts) and its top-1 is in the table."""
    teacher = tmp_path / "teacher"
    train = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", os.path.join(QS, "teacher_ResNet18.yaml"),
             "-o", f"Global.output_dir={teacher}"] + FAST + [
        f"DataLoader.{m}.dataset.{k}={tmp_path / 'data' / v}" for m, k, v in (
            ("Train", "image_root", "images"), ("Eval", "image_root", "images"),
            ("Train", "cls_label_path", "train_list.txt"), ("Eval", "cls_label_path", "val_list.txt"))] + [
        f"Global.class_names={tmp_path / 'data' / 'label_list.txt'}"]
    prep = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prepare_data.py"), "--dataset", "digits",
                           "--out", str(tmp_path / "data")], capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-3000:]
    proc = subprocess.run(train, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = teacher / "ResNet18" / "best_model.pdparams"
    cfg = {"output_dir": str(tmp_path / "run"),
           "data": {"dataset": "digits", "labeled": 300, "unlabeled": 900, "seed": 0},
           "teacher": {"pretrained": str(weights)}, "mine": {"enabled": False},
           "distill": {"config": os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"), "overrides": FAST},
           "export": {"enabled": False}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "ssld_pipeline.py"), "-c", str(path)],
                         capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert (run.stdout + run.stderr).count("evaluating frozen model Teacher") == 1
    distill = json.loads((tmp_path / "run" / "distill" / "stage.json").read_text())
    teacher_row = next(line for line in (tmp_path / "run" / "summary.md").read_text().splitlines()
                       if line.startswith("| teacher"))
    assert f"{100 * distill['teacher_top1']:.2f}%" in teacher_row, teacher_row
