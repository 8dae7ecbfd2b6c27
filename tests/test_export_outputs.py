"""What an exported graph returns (PaddleClas's softmax / sigmoid, or logits) and that no reader applies a second
activation: the rules of ppssld.export.outputs, the predictor on both kinds of export, Arch keys accepted."""
import copy
import logging
import os

import numpy as np
import pytest
import yaml

from test_export import dygraph_topk, make_project
from ppssld.arch import build as arch_build
from ppssld.arch.build import build_model
from ppssld.export.inference import export_model
from ppssld.export.outputs import class_scores, export_activation, graph_output
from ppssld.export.runtime import Predictor
from ppssld.utils.errors import ConfigError

TOPK = {"Metric": {"Eval": [{"TopkAcc": {}}]}}


@pytest.mark.parametrize("config,expected", [
    ({}, "softmax"),
    ({"Arch": {"infer_add_softmax": True}}, "softmax"),
    ({"Arch": {"infer_add_softmax": False}}, "logits"),
    ({"Arch": {"infer_output_key": "logits"}}, "softmax"),
    ({"Global": {"use_multilabel": True}}, "sigmoid"),
    ({"Global": {"use_multilabel": True}, "Arch": {"infer_add_softmax": False}}, "sigmoid"),  # as PaddleClas
    ({"Metric": {"Eval": [{"ATTRMetric": None}]}}, "sigmoid"),
])
def test_activation_is_chosen_as_paddleclas_export_model_chooses_it(config, expected):
    assert export_activation({**TOPK, **config}) == expected


@pytest.mark.parametrize("arch,message", [
    ({"infer_add_softmax": "false"}, "must be true or false, got 'false' .a string: PaddleClas would take any"),
    ({"infer_add_softmax": 0}, "must be true or false, got 0"),
    ({"infer_output_key": "features"}, "infer_output_key 'features' is not supported.*RecModel"),
])
def test_bad_export_keys_are_config_errors(arch, message):
    with pytest.raises(ConfigError, match=message):
        export_activation({**TOPK, "Arch": arch})


def test_graph_output_key_is_checked_and_needed_without_a_readable_graph(tmp_path):
    assert graph_output({"Global": {"output": "sigmoid"}}) == "sigmoid"
    expected = r"x/inference.yml: Global.output must be one of \['logits', 'softmax', 'sigmoid'\] .*, got 'probs'"
    with pytest.raises(ConfigError, match=expected):
        graph_output({"Global": {"output": "probs"}}, where="x/inference.yml")
    with pytest.raises(ConfigError, match="has no Global.output and the graph's last operation could not be read"):
        graph_output({"Global": {}}, str(tmp_path / "missing.json"))


def test_scores_take_an_activation_only_for_logits():
    out = np.array([[2.0, 0.0, -1.0]], np.float32)
    np.testing.assert_array_equal(class_scores(out, "softmax", False), out)
    np.testing.assert_array_equal(class_scores(out, "sigmoid", True), out)
    ref = np.exp(out - 2.0) / np.exp(out - 2.0).sum()
    np.testing.assert_allclose(class_scores(out, "logits", False), ref, rtol=1e-6)
    np.testing.assert_allclose(class_scores(out, "logits", True), 1 / (1 + np.exp(-out)), rtol=1e-6)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(str(tmp_path_factory.mktemp("outputs")), images=5)


@pytest.mark.parametrize("add_softmax", [True, False])
def test_predictor_scores_are_one_softmax_of_the_logits_for_either_export(project, tmp_path, add_softmax):
    """The default export (softmax in the graph) and a logits export (as every export before PaddleClas's
    ending was adopted: ``Global.output: logits``) give the same scores: one softmax, never two."""
    config = copy.deepcopy(project["config"])
    config["Arch"]["infer_add_softmax"] = add_softmax
    result = export_model(config, weights=project["ckpt"], save_dir=str(tmp_path), with_hub=False)
    with open(os.path.join(result.model_dir, "inference.yml"), encoding="utf-8") as handle:
        assert yaml.safe_load(handle)["Global"]["output"] == ("softmax" if add_softmax else "logits")
    predictor = Predictor(result.model_dir, batch_size=2)
    got = predictor.classify([open(p, "rb").read() for p in project["images"]], top_k=3)
    ids, probs = dygraph_topk(project, project["images"], 3)
    assert [r["class_ids"] for r in got] == ids.tolist()
    np.testing.assert_allclose([r["scores"] for r in got], probs, rtol=0, atol=1e-5)


def test_arch_export_keys_build_without_a_warning(caplog):
    arch_build._warned.clear()
    with caplog.at_level(logging.WARNING):
        build_model({"name": "MobileNetV3_small_x0_35", "class_num": 3, "infer_add_softmax": False,
                     "infer_output_key": "logits"})
        build_model({"name": "DistillationModel", "infer_add_softmax": False, "infer_output_key": "logits",
                     "freeze_params_list": [False, False], "infer_model_name": "Student",
                     "models": [{"Teacher": {"name": "MobileNetV3_small_x0_35", "class_num": 3}},
                                {"Student": {"name": "MobileNetV3_small_x0_35", "class_num": 3}}]})
    assert not [r for r in caplog.records if "infer_" in r.getMessage()]
