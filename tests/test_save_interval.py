"""``Global.save_interval``: N > 0 writes ``epoch_N`` every N epochs; 0 or less writes none (PaddleClas 2.5
divides by it); ``latest`` and ``best_model`` are written whatever it is; null is 1."""
import logging

import pytest

from ppssld.utils.config import load_config
from ppssld.engine.builder import build_trainer
from ppssld.engine.checkpoint import snapshot_interval
from ppssld.utils.errors import ConfigError
from tests.conftest import distill_config, save_random_backbone


@pytest.mark.parametrize("interval, snapshots", [(0, []), (-1, []), (2, ["epoch_2"]), (1, ["epoch_1", "epoch_2"]),
                                                 (None, ["epoch_1", "epoch_2"])])
def test_snapshots_follow_save_interval(tiny_data, tmp_path, caplog, interval, snapshots):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=2)
    cfg["Global"]["save_interval"] = interval
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.INFO, logger="ppssld"):
        build_trainer(cfg).fit()
    out = tmp_path / "out" / "DistillationModel"
    written = sorted(p.name[: -len(".pdparams")] for p in out.glob("*.pdparams"))
    assert written == sorted(["best_model", "latest"] + snapshots)
    for tag in written:  # each one complete
        assert (out / f"{tag}.pdopt").is_file() and (out / f"{tag}.pdstates").is_file()
    said = f"Global.save_interval={interval}: no epoch_N snapshots" in caplog.text
    assert said == (interval is not None and interval <= 0)


def test_interval_rule():
    assert [snapshot_interval(v) for v in (None, 1, 5, 0, -1, -7)] == [1, 1, 5, 0, 0, 0]


@pytest.mark.parametrize("value", ["abc", "1.5", "true"])
def test_non_integers_are_refused_naming_the_key(tmp_path, value):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("Global: {epochs: 1}\nArch: {name: ResNet18}\n")
    with pytest.raises(ConfigError, match=r"Global.save_interval must be an integer \(epochs between epoch_N "
                                          r"snapshots; 0 or less: none\)"):
        load_config(str(cfg), [f"Global.save_interval={value}"])
