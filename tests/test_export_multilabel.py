"""Multi-label export and deploy: inference.yml's MultiLabelThreshOutput, sigmoid >= threshold in the predictor."""
import copy
import os

import numpy as np
import paddle
import pytest
import yaml

from test_export import CLASSES, dygraph_student, make_project
from ppssld.data.datasets.imagenet import build_dataset
from ppssld.export.infer_config import multilabel_threshold
from ppssld.export.inference import export_model
from ppssld.export.runtime import Predictor, predict_paths, sigmoid, threshold_results
from ppssld.utils.errors import ConfigError


def test_sigmoid_and_threshold_results_against_numpy():
    logits = np.array([[-800.0, 0.0, 2.0, -1.0], [3.0, 0.5, -0.2, 40.0]], np.float32)
    ref = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -500, 500)))
    np.testing.assert_allclose(sigmoid(logits), ref, rtol=1e-6, atol=1e-30)
    res = threshold_results(sigmoid(logits), 0.5, CLASSES)
    assert [r["class_ids"] for r in res] == [[1, 2], [0, 1, 3]]  # >= threshold: sigmoid(0) = 0.5 counts
    assert res[1]["label_names"] == [CLASSES[0], CLASSES[1], CLASSES[3]]
    np.testing.assert_allclose(res[1]["scores"], ref[1, [0, 1, 3]], rtol=1e-6)
    assert threshold_results(sigmoid(logits), 1.0, None)[0]["class_ids"] == []


@pytest.mark.parametrize("changes,expected", [
    ({}, None),
    ({"Global": {"use_multilabel": True}}, 0.5),
    ({"Metric": {"Eval": [{"ATTRMetric": None}]}, "Infer": {"PostProcess": {"name": "PersonAttribute",
                                                                            "threshold": 0.3}}}, 0.3),
    ({"Infer": {"PostProcess": {"name": "MultiLabelThreshOutput", "threshold": 0.7}}}, 0.7),
])
def test_multilabel_detection_follows_paddleclas_export(changes, expected):
    assert multilabel_threshold({"Global": {}, "Metric": {"Eval": [{"TopkAcc": {}}]}, **changes}) == expected


def test_bad_threshold_is_a_config_error():
    with pytest.raises(ConfigError, match=r"Infer.PostProcess.threshold must be a number in \[0, 1\]"):
        multilabel_threshold({"Infer": {"PostProcess": {"name": "MultiLabelThreshOutput", "threshold": 2}}})


def test_exported_multilabel_predictor_equals_sigmoid_threshold_of_dygraph_logits(tmp_path):
    proj = make_project(str(tmp_path), plain=True, images=6)
    dataset = build_dataset(proj["config"]["DataLoader"]["Eval"]["dataset"], "DataLoader.Eval.dataset")
    batch = np.stack([dataset.load(i) for i in range(len(dataset))])
    logits = dygraph_student(proj["student"])(paddle.to_tensor(batch)).numpy().astype(np.float64)
    probs = 1.0 / (1.0 + np.exp(-logits))
    ordered = np.sort(probs.ravel())
    gap = int(np.argmax(np.diff(ordered[len(ordered) // 4: 3 * len(ordered) // 4]))) + len(ordered) // 4
    threshold = float((ordered[gap] + ordered[gap + 1]) / 2)  # mid-way in a wide gap: no borderline label
    config = copy.deepcopy(proj["config"])
    config["Infer"]["PostProcess"] = {"name": "MultiLabelThreshOutput", "threshold": threshold,
                                      "class_id_map_file": config["Infer"]["PostProcess"]["class_id_map_file"]}
    result = export_model(config, weights=proj["ckpt"], with_hub=False)
    with open(os.path.join(result.model_dir, "inference.yml"), encoding="utf-8") as handle:
        post = yaml.safe_load(handle)["PostProcess"]
    assert post == {"MultiLabelThreshOutput": {"threshold": threshold, "label_list": CLASSES}}
    assert result.infer_config["Global"]["output"] == "sigmoid"  # PaddleClas's multi-label graph ends in a sigmoid
    predictor = Predictor(result.model_dir, batch_size=4)
    paths = [dataset.full_path(i) for i in range(len(dataset))]
    got = predict_paths(predictor, paths)
    for row, res in zip(probs, got, strict=True):
        ids = np.nonzero(row >= threshold)[0]
        assert res["class_ids"] == [int(i) for i in ids]
        assert res["label_names"] == [CLASSES[i] for i in ids]
        np.testing.assert_allclose(res["scores"], row[ids], rtol=1e-4, atol=1e-5)
    assert 0 < sum(len(r["class_ids"]) for r in got) < probs.size  # the threshold splits the labels
