"""select_unlabeled.py: every argument out of range is one ``error:`` line naming it and status 2, before any
image is read; the main job's ``mine`` keys get the same rules under their own names."""
import os
import runpy
import subprocess
import sys

import pytest
import yaml

from ppssld.utils import cli
from ppssld.mining.settings import ARGUMENTS, check_settings
from ppssld.utils.errors import ConfigError
from tests.conftest import ROOT, save_random_backbone, write_images

TOOL = os.path.join(ROOT, "tools", "select_unlabeled.py")
OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 32}},
       {"NormalizeImage": {"scale": 0.00392157, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "order": ""}},
       {"ToCHWImage": None}]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sel"))
    paths = write_images(os.path.join(root, "data"), 8, 4, unlabeled=6)
    weights = save_random_backbone(os.path.join(root, "t.pdparams"), name="MobileNetV3_small_x0_35")
    config = os.path.join(root, "teacher.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"Global": {"device": "cpu"},
                        "Arch": {"name": "MobileNetV3_small_x0_35", "class_num": 4, "pretrained": weights},
                        "DataLoader": {"Eval": {"dataset": {"name": "ImageNetDataset", "transform_ops": OPS}}}},
                       handle)
    return root, paths, config


def _args(project, out, *extra):
    root, paths, config = project
    return ["-c", config, "--pool", paths["unlabeled_list.txt"], "--image-root", os.path.join(root, "data"),
            "--eval-list", paths["val_list.txt"], "--k", "2", "--out", out, *extra]


def _run_in_process(monkeypatch, capsys, argv):
    """The tool's main under cli.run, in this process: (exit status, stderr lines)."""
    main = runpy.run_path(TOOL, run_name="ppssld_select_args_probe")["main"]
    monkeypatch.setattr("sys.argv", [TOOL] + argv)
    with pytest.raises(SystemExit) as info:
        cli.run(main)
    return info.value.code, capsys.readouterr().err.splitlines()


BAD = [
    (["--k", "0"], "--k must be a whole number >= 1 (images kept per class), got 0"),
    (["--k", "-3"], "--k must be a whole number >= 1"),
    (["--topn", "0"], "--topn must be a whole number >= 1"),
    (["--batch-size", "0"], "--batch-size must be a whole number >= 1"),
    (["--chunk-size", "-1"], "--chunk-size must be a whole number >= 1"),
    (["--min-conf", "1.5"], "--min-conf must be a probability from 0 to 1, got 1.5"),
    (["--min-conf", "nan"], "--min-conf must be a probability from 0 to 1, got nan"),
    (["--cap", "0"], "--cap must be a whole number >= 1 (leave it out for no cap), got 0"),
    (["--feature-threshold", "2"], "--feature-threshold must be a cosine from -1 to 1"),
    (["--hash-threshold", "65"], "--hash-threshold must be a whole number of bits from 0 to 64, got 65"),
    (["--hash-threshold", "-1"], "--hash-threshold must be a whole number of bits from 0 to 64"),
    (["--pixel-thresholds", "0.5", "inf"], "--pixel-thresholds must be two correlations from -1 to 1"),
    (["--max-pool", "0"], "--max-pool must be a whole number of pool images >= 1"),
    (["--max-pool", "3", "--seed", "-1"], "--seed must be a whole number in [0, 2**32)"),
    (["--teacher-weights", "w.pdparams"], "--teacher-weights needs --teacher-backbone too"),
    (["--teacher-backbone", "ResNet18"], "--teacher-backbone needs --teacher-weights too"),
    (["--inference-model", "m", "--teacher-weights", "w", "--teacher-backbone", "ResNet18"],
     "--inference-model and --teacher-weights/--teacher-backbone both name a teacher"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_out_of_range_argument_is_one_error_line_and_status_2(monkeypatch, capsys, tmp_path, project, extra,
                                                               message):
    out = str(tmp_path / "out")
    status, err = _run_in_process(monkeypatch, capsys, _args(project, out, *extra))
    assert status == 2
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert not any("Traceback" in line for line in err)
    assert not os.path.exists(os.path.join(out, "scores"))  # refused before any work


def test_missing_image_root_and_out_a_file(monkeypatch, capsys, tmp_path, project):
    args = _args(project, str(tmp_path / "out"))
    args[args.index("--image-root") + 1] = str(tmp_path / "no such folder")
    status, err = _run_in_process(monkeypatch, capsys, args)
    assert status == 2 and "--image-root" in err[-1] and "is not a folder" in err[-1]
    afile = tmp_path / "afile"
    afile.write_text("x")
    status, err = _run_in_process(monkeypatch, capsys, _args(project, str(afile)))
    assert status == 2 and err[-1].startswith("error: --out") and "is a file" in err[-1]


def test_main_job_names_are_the_mine_section_keys():
    with pytest.raises(ConfigError, match=r"^mine\.k must be a whole number >= 1 \(images kept per class\), got 0$"):
        check_settings({"k": 0, "min_conf": 0.0})
    with pytest.raises(ConfigError, match=r"^mine\.min_conf must be a probability"):
        check_settings({"k": 3, "min_conf": -0.1})
    check_settings({"k": 1, "topn": 1, "min_conf": 1.0, "cap": None, "hash_threshold": 0,
                    "pixel_thresholds": (0.2, 0.3), "feature_threshold": None}, ARGUMENTS)  # the edges pass


@pytest.mark.timeout(300)
def test_k_0_end_to_end_and_k_1_still_mines(tmp_path, project):
    env = dict(os.environ, OMP_NUM_THREADS="1", PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    env.pop("PPSSLD_DEBUG", None)
    bad = subprocess.run([sys.executable, TOOL] + _args(project, str(tmp_path / "a"), "--k", "0"),
                         capture_output=True, text=True, env=env, timeout=240)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == ["error: --k must be a whole number >= 1 (images kept per class), "
                                               "got 0"]
    good = subprocess.run([sys.executable, TOOL] + _args(project, str(tmp_path / "b"), "--k", "1"),
                          capture_output=True, text=True, env=env, timeout=240)
    assert good.returncode == 0, good.stderr[-2000:]
    lines = open(tmp_path / "b" / "selected_list.txt", encoding="utf-8").read().splitlines()
    assert 1 <= len(lines) <= 4  # at most k = 1 per class of 4


@pytest.mark.parametrize("flag, message", [("--eval-list", "does not exist"), ("--pool", "neither a label list nor"),
                                           ("--train-list", "does not exist")])
def test_missing_lists_name_the_file(monkeypatch, capsys, tmp_path, project, flag, message):
    args = _args(project, str(tmp_path / "out"))
    missing = str(tmp_path / "missing.txt")
    if flag in args:
        args[args.index(flag) + 1] = missing
    else:
        args += [flag, missing]
    status, err = _run_in_process(monkeypatch, capsys, args)
    text = "\n".join(err)
    assert status == 2 and sum(line.startswith("error:") for line in err) == 1 and "Traceback" not in text
    assert "missing.txt" in text and message in text, err
