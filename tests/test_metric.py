"""Top-k accuracy against numpy, accumulation, -1 rows, ties, clipping and config errors."""
import numpy as np
import paddle
import pytest

from ppssld.metric import build_metrics, validate_metric_config
from ppssld.utils.errors import ConfigError

RNG = np.random.default_rng(1)


def np_topk(x, y, k):
    """Reference: correct when fewer than k other classes score >= the true class."""
    rows = [i for i in range(len(y)) if y[i] >= 0]
    hits = 0
    for i in rows:
        others = np.delete(x[i], y[i])
        hits += int((others >= x[i, y[i]]).sum() < k)
    return hits / len(rows) if rows else 0.0


def T(a):
    return paddle.to_tensor(a)


def test_topk_matches_numpy_and_skips_unlabeled():
    x = RNG.standard_normal((40, 10)).astype(np.float32)
    y = RNG.integers(-1, 10, size=40).astype(np.int64)
    metric = build_metrics([{"TopkAcc": {"topk": [1, 3, 5]}}])[0]
    batch = metric.update(T(x), T(y))
    for k in (1, 3, 5):
        assert batch[f"top{k}"] == pytest.approx(np_topk(x, y, k))
    assert metric.counts()[-1] == int((y >= 0).sum())
    # changing an unlabeled row changes nothing
    metric.reset()
    x2 = x.copy()
    x2[y < 0] = 0.0
    assert metric.update(T(x2), T(y)) == batch


def test_accumulation_equals_one_big_batch_and_counts_round_trip():
    x = RNG.standard_normal((30, 7)).astype(np.float32)
    y = RNG.integers(-1, 7, size=30).astype(np.int64)
    acc = build_metrics([{"DistillationTopkAcc": {"model_key": "Student", "topk": [1, 5]}}])[0]
    for lo in range(0, 30, 8):
        acc.update({"Teacher": T(-x[lo:lo + 8]), "Student": T(x[lo:lo + 8])}, T(y[lo:lo + 8].reshape(-1, 1)))
    whole = build_metrics([{"TopkAcc": {"topk": [1, 5]}}])[0]
    whole.update(T(x), T(y))
    np.testing.assert_array_equal(acc.counts(), whole.counts())
    assert acc.summary() == pytest.approx({"top1": np_topk(x, y, 1), "top5": np_topk(x, y, 5)})
    # the engine all-reduces counts: two ranks holding the same counts double them
    acc.set_counts(acc.counts() * 2.0)
    np.testing.assert_array_equal(acc.counts(), whole.counts() * 2)
    assert acc.summary() == whole.summary()


def test_ties_count_against_and_nan_is_wrong():
    metric = build_metrics([{"TopkAcc": {"topk": [1, 2]}}])[0]
    x = np.array([[1.0, 1.0, 1.0],      # three-way tie: wrong at k=1 and k=2
                  [2.0, 2.0, 0.0],      # two-way tie for first: wrong at 1, right at 2
                  [np.nan, 0.0, 0.0],   # NaN true score: wrong
                  [0.0, 5.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1, 0, 1], dtype=np.int64)
    assert metric.update(T(x), T(y)) == {"top1": 0.25, "top2": 0.5}


def test_k_larger_than_classes_is_clipped():
    metric = build_metrics([{"TopkAcc": {"topk": [1, 5]}}])[0]
    x = np.array([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0]], dtype=np.float32)
    assert metric.update(T(x), T(np.array([0, 0], dtype=np.int64))) == {"top1": 0.5, "top5": 1.0}


def test_all_unlabeled_batch_gives_zero_without_error():
    metric = build_metrics([{"TopkAcc": {"topk": 1}}])[0]
    assert metric.update(T(np.zeros((3, 4), np.float32)), T(np.full(3, -1, np.int64))) == {"top1": 0.0}
    np.testing.assert_array_equal(metric.counts(), [0, 0])


def test_dict_output_selection():
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    y = RNG.integers(0, 4, size=5).astype(np.int64)
    plain = build_metrics([{"TopkAcc": {"topk": [1]}}])[0]
    assert plain.update({"Teacher": T(-x), "Student": T(x)}, T(y))["top1"] == pytest.approx(np_topk(x, y, 1))
    with pytest.raises(ConfigError, match="DistillationTopkAcc"):
        plain.update({"A": T(x), "B": T(x)}, T(y))
    dist = build_metrics([{"DistillationTopkAcc": {"model_key": "Studnt"}}])[0]
    with pytest.raises(ConfigError, match="Did you mean 'Student'"):
        dist.update({"Teacher": T(x), "Student": T(x)}, T(y))


@pytest.mark.parametrize("cfg, pattern", [
    ([{"TopKAcc": {"topk": [1]}}], r"Did you mean 'TopkAcc'.*Valid metric names"),
    ([{"TopkAcc": {"top_k": [1]}}], r"Did you mean 'topk'"),
    ([{"TopkAcc": {"topk": [0, 5]}}], "positive int"),
    ({"TopkAcc": None}, "non-empty list"),
])
def test_config_errors(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_metric_config(cfg, "Metric.Eval")


def test_repeated_k_is_deduplicated():
    metric = build_metrics([{"TopkAcc": {"topk": [1, 1, 2]}}])[0]
    assert metric.topk == [1, 2] and metric.counts().shape == (3,)


def test_out_of_range_label_raises():
    metric = build_metrics([{"TopkAcc": None}])[0]
    with pytest.raises(ValueError, match=r"\[-1, 4\)"):
        metric.update(T(np.zeros((2, 4), np.float32)), T(np.array([4, 0], np.int64)))


def test_topkacc_on_a_distillation_model_whose_student_returns_patterns():
    # PULC distillation configs: Student has return_patterns, so outputs["Student"] is {"logits": ..., stage: ...}
    x = RNG.standard_normal((12, 5)).astype(np.float32)
    y = RNG.integers(0, 5, size=12).astype(np.int64)
    metric = build_metrics([{"TopkAcc": {"topk": [1, 2]}}])[0]
    outputs = {"Teacher": {"logits": T(-x)}, "Student": {"logits": T(x), "blocks3": T(np.zeros((12, 3), "float32"))}}
    batch = metric.update(outputs, T(y))
    for k in (1, 2):
        assert batch[f"top{k}"] == pytest.approx(np_topk(x, y, k))
