"""ppssld's export of a PaddleClas checkpoint equals PaddleClas's own export of it, through Paddle Inference,
ppssld's predictor and PaddleClas's deploy predictor (``deploy/python/predict_cls.py``'s ``ClsPredictor``).

The PaddleClas exports under tests/fixtures/paddleclas/exports/ were written by PaddleClas's
``tools/export_model.py`` from the committed checkpoints (``make_exports.py`` there). PaddleClas's deploy
code is the one the installed ``paddleclas`` package ships (the same files as a PaddleClas checkout's
``deploy/``); on Paddle 3.3.1 it runs only with its ``config.enable_memory_optim()`` call removed.
"""
import copy
import os
import shutil

import cv2
import numpy as np
import paddle
import pytest
import yaml

from conftest import write_images
from ppssld.utils.config import load_config
from ppssld.export.inference import export_model
from ppssld.export.outputs import graph_activation
from ppssld.export.runtime import Predictor, list_images

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "paddleclas")
EXPORTS = os.path.join(FIXTURES, "exports")
DISTILL, PLAIN = "distill_dml_mv3", "plain_mv3"
VARIANTS = {  # PaddleClas graph -> (checkpoint, overrides PaddleClas's export got, what the graph returns)
    "distill_dml_mv3.softmax": (DISTILL, [], "softmax"),
    "distill_dml_mv3.sigmoid": (DISTILL, ["Global.use_multilabel=True"], "sigmoid"),
    "distill_dml_mv3.logits": (DISTILL, ["Arch.infer_add_softmax=False"], "logits"),
    "plain_mv3.softmax": (PLAIN, [], "softmax"),
}
TOL = 1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pc_export_data"))
    write_images(root, 12, 3)
    return root


def paddleclas_export(variant: str, root: str) -> str:
    """PaddleClas's export of ``variant`` in its own layout: ``inference.json`` + ``inference.pdiparams``."""
    folder = os.path.join(root, "paddleclas", variant)
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(EXPORTS, variant + ".json"), os.path.join(folder, "inference.json"))
    shutil.copyfile(os.path.join(EXPORTS, VARIANTS[variant][0] + ".pdiparams"),
                    os.path.join(folder, "inference.pdiparams"))
    return folder


def ppssld_export(variant: str, data: str, root: str) -> str:
    """ppssld's export of the same checkpoint with the same overrides."""
    stem, overrides, _ = VARIANTS[variant]
    paths = [f"DataLoader.{mode}.dataset.{key}" for mode in ("Train", "Eval") for key in ("image_root",
                                                                                          "cls_label_path")]
    values = [f"{data}/", f"{data}/train_list.txt"] * 2
    config = load_config(os.path.join(FIXTURES, stem + ".yaml"),
                         [f"{p}={v}" for p, v in zip(paths, values, strict=True)] + overrides)
    result = export_model(config, weights=os.path.join(FIXTURES, stem, "epoch_1"),
                          save_dir=os.path.join(root, "ppssld", variant), with_hub=False)
    return result.model_dir


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, data, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pc_export"))
    variant = request.param
    return {"variant": variant, "output": VARIANTS[variant][2], "paddleclas": paddleclas_export(variant, root),
            "ppssld": ppssld_export(variant, data, root), "images": list_images(os.path.join(data, "images"))}


def raw_outputs(folder: str, batch: np.ndarray) -> np.ndarray:
    """The graph's outputs through a bare Paddle Inference predictor (no ppssld code)."""
    config = paddle.inference.Config(os.path.join(folder, "inference.json"),
                                     os.path.join(folder, "inference.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(batch)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def test_graphs_return_the_same_outputs(pair):
    ours = Predictor(pair["ppssld"], batch_size=len(pair["images"]))
    batch = np.stack([ours.preprocess(open(p, "rb").read()) for p in pair["images"]])
    theirs, mine = raw_outputs(pair["paddleclas"], batch), raw_outputs(pair["ppssld"], batch)
    assert theirs.shape == mine.shape == (len(pair["images"]), 3)
    assert np.abs(theirs - mine).max() <= TOL
    assert ours.output == ours.infer_cfg["Global"]["output"] == pair["output"]
    assert graph_activation(os.path.join(pair["paddleclas"], "inference.json")) == pair["output"]
    assert graph_activation(os.path.join(pair["ppssld"], "inference.json")) == pair["output"]
    if pair["output"] == "softmax":
        assert np.abs(mine.sum(1) - 1).max() < 1e-5
    elif pair["output"] == "sigmoid":
        assert ((mine >= 0) & (mine <= 1)).all() and np.abs(mine.sum(1) - 1).max() > 1e-2
    else:
        assert np.abs(mine.sum(1) - 1).max() > 1e-2 and (mine < 0).any()  # logits, not scores


# ---------------------------------------------------------------- PaddleClas's deploy predictor


class _NoMemoryOptimConfig(paddle.inference.Config):
    """paddle.inference.Config with ``enable_memory_optim`` doing nothing: PaddleClas's predictor with that
    one call removed (on Paddle 3.3.1 ``create_predictor`` fails with it)."""

    def enable_memory_optim(self, *args, **kwargs) -> None:
        return None


def paddleclas_deploy_config(folder: str, count: int, output: str) -> dict:
    """PaddleClas's deploy config for the fixture images (no resize; its Normalize, ToCHW; Topk or threshold)."""
    from paddleclas.deploy.utils.config import create_attr_dict

    post = ({"main_indicator": "MultiLabelThreshOutput", "MultiLabelThreshOutput": {"threshold": 0.5}}
            if output == "sigmoid" else {"main_indicator": "Topk", "Topk": {"topk": 3}})
    cfg = {"Global": {"inference_model_dir": folder, "batch_size": count, "use_gpu": False, "enable_mkldnn": False,
                      "cpu_num_threads": 1, "enable_benchmark": False, "use_fp16": False, "ir_optim": True,
                      "use_tensorrt": False, "gpu_mem": 500, "enable_profile": False},
           "PreProcess": {"transform_ops": [
               {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                   "order": "", "channel_num": 3}},
               {"ToCHWImage": None}]},
           "PostProcess": post}
    create_attr_dict(cfg)
    return cfg


def paddleclas_predict(folder: str, images: list, output: str, monkeypatch) -> list:
    """What PaddleClas's ClsPredictor returns for ``images`` (read as its predict_cls.py main reads them)."""
    from paddleclas.deploy.python import predict_cls
    from paddleclas.deploy.utils import predictor as pc_predictor

    monkeypatch.setattr(pc_predictor, "Config", _NoMemoryOptimConfig)
    cls = predict_cls.ClsPredictor(paddleclas_deploy_config(folder, len(images), output))
    return cls.predict([cv2.imread(p)[:, :, ::-1] for p in images])


def assert_same_results(got: list, want: list, tol: float = TOL) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert list(a["class_ids"]) == list(b["class_ids"])
        np.testing.assert_allclose(a["scores"], b["scores"], rtol=0, atol=tol)


def test_paddleclas_deploy_predictor_gives_the_same_scores_for_both_exports(pair, monkeypatch):
    theirs = paddleclas_predict(pair["paddleclas"], pair["images"], pair["output"], monkeypatch)
    mine = paddleclas_predict(pair["ppssld"], pair["images"], pair["output"], monkeypatch)
    assert any(r["class_ids"] for r in theirs)
    assert_same_results(mine, theirs, TOL + 1e-7)  # its Topk rounds scores to 5 decimals


def test_ppssld_predictor_gives_paddleclas_deploy_scores(pair, monkeypatch, tmp_path):
    """ppssld's predictor on its export and on PaddleClas's (given an inference.yml without Global.output, so the
    graph's last operation decides) against PaddleClas's deploy predictor; a logits graph gets its softmax in
    ppssld's predictor, never a second one on a softmax graph."""
    ours = Predictor(pair["ppssld"], batch_size=4)
    theirs_dir = str(tmp_path / "paddleclas_with_yml")
    shutil.copytree(pair["paddleclas"], theirs_dir)
    cfg = copy.deepcopy(ours.infer_cfg)
    del cfg["Global"]["output"], cfg["Global"]["exported_by"]
    with open(os.path.join(theirs_dir, "inference.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(cfg, handle)
    on_theirs = Predictor(theirs_dir, batch_size=4)
    assert on_theirs.output == pair["output"]
    mine = [{"class_ids": r["class_ids"], "scores": r["scores"]} for r in ours.classify(
        [open(p, "rb").read() for p in pair["images"]])]
    assert_same_results([{"class_ids": r["class_ids"], "scores": r["scores"]} for r in on_theirs.classify(
        [open(p, "rb").read() for p in pair["images"]])], mine)
    reference = paddleclas_predict(pair["paddleclas"], pair["images"], pair["output"], monkeypatch)
    if pair["output"] == "logits":  # PaddleClas's deploy takes a logits graph's outputs as the scores
        raw = np.array([r["scores"] for r in reference])
        shifted = np.exp(raw - raw.max(1, keepdims=True))
        # its top-3 of 3 classes holds every logit: their softmax is what ppssld's predictor reports
        reference = [{"class_ids": r["class_ids"], "scores": list(s / s.sum())} for r, s in zip(reference, shifted)]
        assert_same_results(mine, reference, 1e-4)  # from logits rounded to 5 decimals
    else:
        assert_same_results(mine, reference, TOL + 1e-7)


@pytest.mark.skipif(paddle.__version__ != "3.3.1", reason="the deploy/README.md note is about Paddle 3.3.1")
def test_paddleclas_deploy_predictor_as_shipped_fails_on_paddle_3_3_1(tmp_path):
    """deploy/README.md's note: its ``config.enable_memory_optim()`` makes create_predictor fail, even on
    PaddleClas's own export."""
    from paddleclas.deploy.python import predict_cls

    folder = paddleclas_export("plain_mv3.softmax", str(tmp_path))
    with pytest.raises(ValueError, match="memory_optimize_pass"):
        predict_cls.ClsPredictor(paddleclas_deploy_config(folder, 1, "softmax"))


def test_mining_teacher_takes_paddleclas_export_scores_as_they_are(pair):
    """``tools/select_unlabeled.py --inference-model`` on PaddleClas's export (no inference.yml: the graph's last
    operation decides): a softmax (or sigmoid) graph's outputs are taken as they are, a logits graph gets its
    softmax."""
    from ppssld.teacher.frozen import teacher_from_inference

    ours = Predictor(pair["ppssld"], batch_size=len(pair["images"]))
    batch = np.stack([ours.preprocess(open(p, "rb").read()) for p in pair["images"]])
    teacher = teacher_from_inference(os.path.join(pair["paddleclas"], "inference"))
    assert teacher.outputs_probs == (pair["output"] != "logits")
    probs, _ = teacher(batch)
    np.testing.assert_allclose(probs, ours.scores(raw_outputs(pair["ppssld"], batch)), rtol=0, atol=TOL)
