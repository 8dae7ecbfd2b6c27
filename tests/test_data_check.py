"""tools/check_data.py: every planted problem reported in one multi-process scan."""
import json
import os
import sys

import cv2
import numpy as np
import pytest
import yaml

from ppssld.data.check import check_dataset, check_image_file
from ppssld.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import check_data  # noqa: E402


def _plant(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(6):
        cv2.imwrite(str(root / f"ok{i}.png"), np.full((5, 5, 3), 30 * i, np.uint8))
    ok, jpg = cv2.imencode(".jpg", np.random.RandomState(0).randint(0, 255, (32, 32, 3), np.uint8))
    (root / "truncated.jpg").write_bytes(jpg.tobytes()[: len(jpg) * 2 // 3])
    (root / "empty.png").write_bytes(b"")
    (root / "garbage.png").write_bytes(b"GIF89a but not really")
    train = ("ok0.png 0\nok1.png 1\nmissing.png 1\ntruncated.jpg 0\nempty.png 1\ngarbage.png 2\nok2.png seven\n"
             "ok3.png 9\nok0.png 1\n../outside.png 0\n")
    (tmp_path / "train.txt").write_text(train)
    (tmp_path / "unl.txt").write_text("ok4.png\nok5.png 3\n")
    return str(root), str(tmp_path / "train.txt"), str(tmp_path / "unl.txt")


EXPECTED = {  # line in train.txt -> words in its message
    3: "missing.png' does not exist", 4: "truncated JPEG", 5: "the file is empty", 6: "not a decodable image",
    7: "'seven' is not an integer", 8: "label 9 is outside [0, 3)", 9: "has label 1 here but label 0",
    10: "escapes image_root",
}


def test_every_problem_in_one_report(tmp_path):
    root, train, unl = _plant(tmp_path)
    report = check_dataset(root, train, unl, class_num=3, workers=2, name="train")
    problems = report["problems"]
    for line, words in EXPECTED.items():
        hits = [p for p in problems if p.startswith(f"{train}:{line}:")]
        assert hits and words in hits[0], (line, problems)
    assert any(p.startswith(f"{unl}:2:") and "unlabeled_ignore_labels" in p for p in problems)
    assert len(problems) == len(EXPECTED) + 1
    assert (report["images"], report["labeled"], report["unlabeled"]) == (10, 9, 1)  # parsed rows


def test_clean_data_and_single_process(tmp_path):
    root, _, _ = _plant(tmp_path)
    (tmp_path / "clean.txt").write_text("ok0.png 0\nok1.png 1\n")
    report = check_dataset(root, str(tmp_path / "clean.txt"), workers=1)
    assert report["problems"] == [] and report["images"] == 2
    assert check_image_file(os.path.join(root, "ok0.png")) is None
    assert "cannot be read" in check_image_file(root)


def test_cli_exit_status_and_json_report(tmp_path, capsys):
    root, train, unl = _plant(tmp_path)
    out = str(tmp_path / "report.json")
    status = check_data.main(["--image-root", root, "--list", train, "--unlabeled-list", unl, "--class-num", "3",
                              "--workers", "2", "--report", out, "--max-print", "3"])
    assert status == 1
    text = capsys.readouterr().out
    assert "9 problem(s)" in text and "... and 6 more (see --report)" in text
    saved = json.load(open(out))
    assert saved["problems"] == 9 and len(saved["datasets"][0]["problems"]) == 9

    (tmp_path / "clean.txt").write_text("ok0.png 0\n")
    config = {"Arch": {"name": "ResNet18", "class_num": 3},
              "DataLoader": {"Train": {"dataset": {"name": "ImageNetDataset", "image_root": root,
                                                   "cls_label_path": str(tmp_path / "clean.txt")}},
                             "Eval": {"dataset": {"name": "ImageNetDataset", "image_root": root,
                                                  "cls_label_path": str(tmp_path / "clean.txt")}}}}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    assert check_data.main(["-c", str(cfg_path), "--workers", "1"]) == 0
    assert check_data.main(["-c", str(cfg_path), "-o", f"DataLoader.Eval.dataset.cls_label_path={train}",
                            "--workers", "1"]) == 1
    assert "DataLoader.Eval.dataset" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="give --config"):
        check_data.main([])
