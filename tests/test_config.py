"""Config loading: overrides, validation messages, unsupported-key warnings, no mutation."""
import logging

import pytest
import yaml

from ppssld.utils.config import load_config
from ppssld.utils.errors import ConfigError

PPCLS = "ppcls_configs/ImageNet/Distillation/PPLCNet_x2_5_ssld.yaml"


def test_overrides_parse_values_and_address_list_items():
    cfg = load_config(PPCLS, ["Global.epochs=3", "Arch.models.Student.name=ResNet18",
                              "Arch.models.0.Teacher.pretrained=/w/t.pdparams", "Global.use_visualdl=true",
                              "Optimizer.lr.learning_rate=1e-3", "Global.image_shape=[3, 32, 32]",
                              "Loss.Train.DistillationDMLLoss.weight=4"])
    assert cfg["Global"]["epochs"] == 3
    assert cfg["Global"]["use_visualdl"] is True
    assert cfg["Optimizer"]["lr"]["learning_rate"] == pytest.approx(1e-3)
    assert cfg["Global"]["image_shape"] == [3, 32, 32]
    assert cfg["Arch"]["models"][1]["Student"]["name"] == "ResNet18"
    assert cfg["Arch"]["models"][0]["Teacher"]["pretrained"] == "/w/t.pdparams"
    assert cfg["Loss"]["Train"][0]["DistillationDMLLoss"]["weight"] == 4


@pytest.mark.parametrize("override, expected", [
    ("Globl.epochs=3", "Did you mean 'Global'"),
    ("Global.epoch=3", "Did you mean 'epochs'"),
    ("DataLoader.Train.sampler.batchsize=4", "Did you mean 'batch_size'"),
    ("Arch.models.Studnt.name=x", "Did you mean 'Student'"),
    ("Arch.models.5.name=x", "out of range"),
    ("Global.epochs", "must look like Section.key=value"),
    ("Global.epochs=[1,", "not valid YAML"),
])
def test_bad_overrides_name_the_closest_key(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(PPCLS, [override])


def test_unknown_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"Global": {"epochs": 1, "outptu_dir": "x"}, "Arch": {"name": "ResNet18"}}))
    with pytest.raises(ConfigError, match=r"Global.outptu_dir.*Did you mean 'output_dir'"):
        load_config(str(path))
    path.write_text(yaml.safe_dump({"Globals": {}, "Arch": {"name": "ResNet18"}}))
    with pytest.raises(ConfigError, match="Did you mean 'Global'"):
        load_config(str(path))


def test_unsupported_paddleclas_keys_warn_once(tmp_path, caplog):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"Global": {"eval_mode": "retrieval", "use_dali": False}, "Arch": {"name": "ResNet18"},
                                    "UnLabelLoss": {"Train": []}, "Slim": {"quant": {"name": "pact"}}}))
    from ppssld.utils import config as config_module
    config_module._warned.clear()
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.WARNING, logger="ppssld.utils.config"):
        load_config(str(path))
        load_config(str(path))
    # one record object can reach caplog through two handlers when an earlier test left propagation on;
    # two warnings are two record objects, so count distinct records
    records = {id(r): r for r in caplog.records if r.name == "ppssld.utils.config"}
    messages = [r.getMessage() for r in records.values()]
    for key in ("Global.eval_mode", "Global.use_dali", "UnLabelLoss"):
        assert sum(key + " is a PaddleClas key" in m for m in messages) == 1, messages
    assert not any("Slim" in m for m in messages), messages  # Slim.quant is implemented (ppssld.slim)


def test_load_does_not_mutate_and_yaml_is_safe(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("Global:\n  epochs: !!python/object/apply:os.system ['echo pwned']\nArch: {name: ResNet18}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))
    first = load_config(PPCLS, ["Global.epochs=2"])
    second = load_config(PPCLS)
    assert first["Global"]["epochs"] == 2 and second["Global"]["epochs"] == 100


def test_missing_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope.yaml")
