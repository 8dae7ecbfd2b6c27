"""MultiLabelMAP against numpy references of average precision (integral and 11-point)."""
import numpy as np
import paddle
import pytest

from ppssld.metric import build_metrics
from ppssld.utils.errors import ConfigError


def np_ap_integral(scores, positive):
    """Mean, over the positives, of the precision at each positive's rank (distinct scores)."""
    order = np.argsort(-scores)
    hits = positive[order]
    ranks = np.nonzero(hits)[0] + 1
    return np.mean(np.arange(1, len(ranks) + 1) / ranks)


def np_ap_11point(scores, positive):
    """VOC 11-point: mean over r in {0, .1, .., 1} of the best precision at recall >= r."""
    order = np.argsort(-scores)
    hits = positive[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    recall = np.cumsum(hits) / hits.sum()
    return np.mean([precision[recall >= r - 1e-12].max() if (recall >= r - 1e-12).any() else 0.0
                    for r in np.linspace(0, 1, 11)])


def _data(n=40, c=5, seed=0):
    rng = np.random.RandomState(seed)
    logits = rng.randn(n, c) * 2
    labels = (rng.rand(n, c) < 0.35).astype(np.int64)
    labels[:, 4] = 0  # a class with no positive: left out of the mean
    labels[3, 0] = -1  # an unknown entry: left out of its class
    return logits, labels


@pytest.mark.parametrize("map_type,reference", [("integral", np_ap_integral), ("11point", np_ap_11point)])
def test_multilabel_map_matches_numpy_over_batches(map_type, reference):
    logits, labels = _data()
    metric = build_metrics([{"MultiLabelMAP": {"map_type": map_type}}])[0]
    for start in range(0, len(logits), 16):
        metric.update(paddle.to_tensor(logits[start:start + 16], dtype="float32"),
                      paddle.to_tensor(labels[start:start + 16]))
    metric.set_counts(metric.counts())  # the evaluator's round trip (one process)
    scores = 1 / (1 + np.exp(-logits.astype(np.float32).astype(np.float64)))
    aps = []
    for c in range(4):
        known = labels[:, c] >= 0
        aps.append(reference(scores[known, c], labels[known, c] == 1))
    assert metric.summary()["MultiLabelMAP"] == pytest.approx(np.mean(aps), rel=1e-9)
    assert metric.primary_key == "MultiLabelMAP"


def test_perfect_ranking_is_one_and_bad_type_is_an_error():
    metric = build_metrics([{"MultiLabelMAP": None}])[0]
    metric.update(paddle.to_tensor([[3.0, -1.0], [-2.0, 2.0], [-3.0, 1.0]]), paddle.to_tensor([[1, 0], [0, 1], [0, 1]]))
    assert metric.summary()["MultiLabelMAP"] == pytest.approx(1.0)
    metric.reset()
    assert metric.summary()["MultiLabelMAP"] == 0.0
    with pytest.raises(ConfigError, match="map_type must be one of integral, 11point"):
        build_metrics([{"MultiLabelMAP": {"map_type": "voc"}}])


def test_accumulate_keeps_batches_on_the_device_and_counts_them_as_update_does():
    import numpy as np
    import paddle

    from ppssld.metric.multilabel import FOLD_EVERY, AccuracyScore, HammingDistance
    from ppssld.metric.multilabel_map import MultiLabelMAP

    rng = np.random.RandomState(4)
    batches = []
    for n in (5, 3, 7) * (FOLD_EVERY // 2):  # more than FOLD_EVERY batches: folded on the way and at the end
        logits = rng.randn(n, 6).astype("float32")
        labels = rng.randint(-1, 2, size=(n, 6)).astype("int64")
        batches.append((paddle.to_tensor(logits, stop_gradient=False) * 1.0, paddle.to_tensor(labels)))
    for make in (HammingDistance, AccuracyScore, MultiLabelMAP):
        by_update, by_accumulate = make(), make()
        for outputs, labels in batches:
            by_update.update(outputs, labels)
            by_accumulate.accumulate(outputs, labels)
        assert 0 < len(by_accumulate._kept) < FOLD_EVERY  # noqa: SLF001  (the tail still on the device)
        assert all(o.stop_gradient for o, _ in by_accumulate._kept)  # noqa: SLF001  (no graph kept alive)
        assert by_accumulate.summary() == by_update.summary(), make.__name__
        np.testing.assert_array_equal(by_accumulate.counts(), by_update.counts())
