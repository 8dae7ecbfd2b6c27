"""GoogLeNetLoss (main + 0.3 * two auxiliary CEs) and GoogLeNetTopkAcc against numpy; one training step."""
import numpy as np
import paddle
import pytest

from ppssld.engine.builder import build_trainer
from ppssld.loss import build_loss
from ppssld.metric.topk import GoogLeNetTopkAcc
from ppssld.utils.errors import ConfigError
from tests.conftest import loader_cfg, write_images


def _np_ce(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def test_value_matches_numpy_and_skips_unlabeled_rows():
    rng = np.random.RandomState(0)
    outs = [rng.randn(5, 7).astype("float32") * 3 for _ in range(3)]
    labels = np.array([0, 6, -1, 3, 2])
    keep = labels >= 0
    expected = sum(w * _np_ce(o[keep], labels[keep]).mean() for w, o in zip((1.0, 0.3, 0.3), outs))
    loss = build_loss([{"GoogLeNetLoss": {"weight": 2.0}}], "Loss.Train")
    got = loss([paddle.to_tensor(o) for o in outs], paddle.to_tensor(labels))
    parts = {k: float(v) for k, v in got.items()}
    np.testing.assert_allclose(parts["GoogLeNetLoss"], 2.0 * expected, rtol=1e-5)  # parts are weighted
    np.testing.assert_allclose(float(got["loss"]), 2.0 * expected, rtol=1e-5)


def test_refuses_label_smoothing_and_other_models():
    with pytest.raises(ConfigError, match="no label smoothing"):
        build_loss([{"GoogLeNetLoss": {"epsilon": 0.1}}], "Loss.Train")
    loss = build_loss([{"GoogLeNetLoss": {}}], "Loss.Train")
    with pytest.raises(ConfigError, match="three outputs"):
        loss({"Student": paddle.rand([2, 3])}, paddle.to_tensor([0, 1]))


def test_topk_acc_scores_the_main_classifier():
    main = paddle.to_tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    aux = paddle.to_tensor([[5.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    metric = GoogLeNetTopkAcc(topk=[1, 2])
    metric.update([main, aux, aux], paddle.to_tensor([1, 2]))
    assert metric.summary() == {"top1": 0.5, "top2": 1.0}
    with pytest.raises(ConfigError, match="GoogLeNet's outputs"):
        metric.update(main, paddle.to_tensor([1, 2]))


def test_googlenet_config_trains_one_step_and_evaluates(tmp_path):
    root = str(tmp_path / "data")
    paths = write_images(root, 2, 2, size=224)
    cfg = {
        "Global": {"output_dir": str(tmp_path / "out"), "device": "cpu", "epochs": 1, "seed": 3,
                   "print_batch_step": 1, "image_shape": [3, 224, 224]},
        "Arch": {"name": "GoogLeNet", "class_num": 2},
        "Loss": {"Train": [{"GoogLeNetLoss": {"weight": 1.0}}], "Eval": [{"GoogLeNetLoss": {"weight": 1.0}}]},
        "Optimizer": {"name": "Momentum", "momentum": 0.9, "lr": {"name": "Cosine", "learning_rate": 0.01},
                      "regularizer": {"name": "L2", "coeff": 1e-4}},
        "DataLoader": {"Train": loader_cfg(root, paths["train_list.txt"], True, batch_size=2, size=224),
                       "Eval": loader_cfg(root, paths["val_list.txt"], False, batch_size=2, size=224)},
        "Metric": {"Train": [{"GoogLeNetTopkAcc": {"topk": [1, 2]}}],
                   "Eval": [{"GoogLeNetTopkAcc": {"topk": [1, 2]}}]},
    }
    trainer = build_trainer(cfg)
    before = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}
    averages = trainer.train_one_epoch(1)
    assert np.isfinite(averages["loss"])
    after = trainer.model.state_dict()
    assert any(not np.array_equal(before[k], after[k].numpy()) for k in before)
    results = trainer._evaluate(1)
    assert results["top2"] == 1.0 and 0.0 <= results["top1"] <= 1.0
