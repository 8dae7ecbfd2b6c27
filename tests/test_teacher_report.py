"""The frozen teacher's evaluation: measured once, reused while weights, eval data and metric are the same."""
import json
import logging
import os
from typing import Any, Dict, List

import paddle
import pytest
import yaml

from conftest import distill_config, save_random_backbone
from ppssld.utils.config import load_config
from ppssld.engine import evaluator
from ppssld.engine.builder import build_eval_pieces, build_full_model, prepare_runtime
from ppssld.engine.teacher_report import cache_dir, report_frozen_models, weight_sources
from ppssld.utils.errors import ConfigError


@pytest.fixture
def calls(monkeypatch) -> List[str]:
    """Counts the evaluations (the real ``evaluate`` still runs)."""
    seen: List[str] = []
    real = evaluator.evaluate

    def counting(*args: Any, **kwargs: Any) -> Dict[str, float]:
        seen.append("evaluate")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluator, "evaluate", counting)
    return seen


@pytest.fixture
def setup(tiny_data, tmp_path, private_cache_home):
    """A tiny distillation config (random ResNet18 teacher) with its XDG cache under tmp_path."""
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"))
    config = distill_config(root, paths, teacher, str(tmp_path / "out"))
    assert cache_dir().startswith(str(private_cache_home))
    return config, teacher, paths


def _report(config: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    prepare_runtime(config)
    loader, _, _ = build_eval_pieces(config)
    return report_frozen_models(config, build_full_model(config), loader)


def _records() -> List[str]:
    return sorted(os.listdir(cache_dir())) if os.path.isdir(cache_dir()) else []


def test_second_call_reuses_the_stored_result(setup, calls, caplog, tmp_path):
    config, _, _ = setup
    first = _report(config)
    assert calls == ["evaluate"] and len(_records()) == 1
    other = dict(config, Global=dict(config["Global"], output_dir=str(tmp_path / "elsewhere")))
    with caplog.at_level(logging.INFO, logger="ppssld.engine.teacher_report"):
        second = _report(other)  # another output folder, same teacher and eval list
    assert calls == ["evaluate"], "the second call evaluated again"
    assert second == first and set(first["Teacher"]) >= {"top1", "top5", "samples"}
    line = next(r.getMessage() for r in caplog.records if "reused from" in r.getMessage())
    assert line.startswith(f"frozen model Teacher: top-1 {first['Teacher']['top1']:.5f} (reused from {cache_dir()}")
    assert "measured 20" in line


def test_new_teacher_weights_or_eval_list_are_evaluated_again(setup, calls):
    config, teacher, paths = setup
    _report(config)
    save_random_backbone(teacher, seed=1)  # same path, other contents
    _report(config)
    assert calls == ["evaluate"] * 2
    with open(paths["val_list.txt"], "r", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    with open(paths["val_list.txt"], "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines[:-4]) + "\n")
    changed = _report(config)
    assert calls == ["evaluate"] * 3 and changed["Teacher"]["samples"] == len(lines) - 4
    assert len(_records()) == 3
    _report(config)  # nothing changed since: reused
    assert calls == ["evaluate"] * 3


def test_eval_teacher_false_skips_it(setup, calls, caplog, tmp_path):
    config, _, _ = setup
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    off = load_config(str(path), ["Global.eval_teacher=False"])
    with caplog.at_level(logging.INFO, logger="ppssld.engine.teacher_report"):
        assert _report(off) == {}
    assert calls == [] and _records() == []
    assert "Global.eval_teacher: false" in caplog.text
    assert load_config(str(path), ["Global.eval_teacher=True"])["Global"]["eval_teacher"] is True
    with pytest.raises(ConfigError, match="Global.eval_teacher must be true or false"):
        load_config(str(path), ["Global.eval_teacher=maybe"])


def test_a_corrupt_record_is_ignored_with_a_warning_and_rewritten(setup, calls, caplog):
    config, _, _ = setup
    first = _report(config)
    record = os.path.join(cache_dir(), _records()[0])
    with open(record, "w", encoding="utf-8") as handle:
        handle.write('{"format": "ppssld-teacher-eval", "results": {"top1"')  # cut short
    with caplog.at_level(logging.WARNING, logger="ppssld.engine.teacher_report"):
        again = _report(config)
    assert calls == ["evaluate"] * 2 and again == first
    assert any(r.levelno == logging.WARNING and record in r.getMessage() for r in caplog.records)
    with open(record, "r", encoding="utf-8") as handle:
        assert json.load(handle)["results"]["top1"] == first["Teacher"]["top1"]
    _report(config)
    assert calls == ["evaluate"] * 2


def test_a_whole_model_file_is_fingerprinted_and_no_weights_means_no_reuse(setup, tmp_path):
    config, _, _ = setup
    whole = str(tmp_path / "whole.pdparams")
    paddle.save({"Teacher.fc.weight": paddle.zeros([2, 2])}, whole)
    arch = dict(config["Arch"], models=[{"Teacher": {"name": "ResNet18", "class_num": 4}},
                                        config["Arch"]["models"][1]])
    from_whole = dict(config, Arch=arch, Global=dict(config["Global"], pretrained_model=whole))
    sources, _ = weight_sources(from_whole, "Teacher")
    assert [s["role"] for s in sources] == ["Global.pretrained_model"]
    paddle.save({"Teacher.fc.weight": paddle.ones([2, 2])}, whole)
    assert weight_sources(from_whole, "Teacher")[0] != sources  # new contents, new key
    none, why = weight_sources(dict(config, Arch=arch), "Teacher")
    assert none is None and "Teacher.pretrained and Global.pretrained_model are unset" in why
    missing, why = weight_sources(dict(config, Arch=dict(config["Arch"], models=[
        {"Teacher": {"name": "ResNet18", "class_num": 4, "pretrained": str(tmp_path / "gone")}},
        config["Arch"]["models"][1]])), "Teacher")
    assert missing is None and "Teacher.pretrained cannot be fingerprinted" in why
    assert weight_sources(config, "Teacher")[0][0]["role"] == "Teacher.pretrained"


def test_no_identifiable_weights_is_evaluated_and_says_why(setup, calls, caplog):
    config, _, _ = setup
    prepare_runtime(config)
    loader, _, _ = build_eval_pieces(config)
    model = build_full_model(config)
    unnamed = dict(config, Arch=dict(config["Arch"], models=[{"Teacher": {"name": "ResNet18", "class_num": 4}},
                                                             config["Arch"]["models"][1]]))
    with caplog.at_level(logging.INFO, logger="ppssld.engine.teacher_report"):
        report_frozen_models(unnamed, model, loader)
        report_frozen_models(unnamed, model, loader)
    assert calls == ["evaluate"] * 2 and _records() == []
    assert "evaluated, not reused: no weights file names Teacher's weights" in caplog.text
