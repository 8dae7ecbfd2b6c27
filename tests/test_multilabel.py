"""Multi-label (PULC attributes): list format, losses and metrics against numpy references written from
PaddleClas's code (ppcls/loss/multilabelloss.py, dmlloss.py, ppcls/metric/metrics.py, utils/misc.py)."""
import os

import cv2
import numpy as np
import paddle
import pytest

from ppssld.data.datasets.imagenet import build_dataset, validate_dataset_config
from ppssld.data.datasets.multilabel import parse_multilabel_line
from ppssld.loss import build_loss
from ppssld.loss.multilabel import multilabel_bce, ratio_weight
from ppssld.metric import build_metrics, primary_key
from ppssld.utils.errors import ConfigError, DataError

OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 8}},
       {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0, 0, 0], "std": [1, 1, 1], "order": ""}}]
T = paddle.to_tensor


def make_root(tmp_path, names):
    root = tmp_path / "root"
    for i, name in enumerate(names):
        os.makedirs(os.path.dirname(str(root / name)), exist_ok=True)
        cv2.imwrite(str(root / name), np.full((10, 12, 3), 10 * i, np.uint8))
    return str(root)


# ---------------------------------------------------------------- dataset
def test_list_format_tab_space_unlabeled_and_ratio(tmp_path):
    root = make_root(tmp_path, ["a.png", "b.png", "sub dir/c d.png", "u.png", "v.png"])
    lst = tmp_path / "train.txt"
    lst.write_text("a.png\t1,0,1\nb.png 0,0,1\nsub dir/c d.png\t1,-1,0\nu.png\nv.png\t-1,-1,-1\n")
    ds = build_dataset({"name": "MultiLabelDataset", "image_root": root, "cls_label_path": str(lst),
                        "transform_ops": OPS, "class_num": 3})
    assert (len(ds), ds.num_labeled, ds.num_unlabeled) == (5, 3, 2)
    img, label = ds[2]
    assert img.shape == (3, 8, 8) and label.dtype == np.float32
    np.testing.assert_array_equal(label, [1, -1, 0])
    np.testing.assert_array_equal(ds[3][1], [-1, -1, -1])
    with_ratio = build_dataset({"name": "MultiLabelDataset", "image_root": root, "cls_label_path": str(lst),
                                "transform_ops": OPS, "label_ratio": True})
    _, both = with_ratio[0]
    assert both.shape == (2, 3)
    # positive fraction over known entries: class0 2/3, class1 0/2, class2 2/3
    np.testing.assert_allclose(both[1], [2 / 3, 0.0, 2 / 3], rtol=1e-6)
    assert with_ratio.unlabeled_target().shape == (2, 3)


def test_bad_lists_name_file_and_line(tmp_path):
    root = make_root(tmp_path, ["a.png", "b.png"])
    lst = tmp_path / "bad.txt"
    lst.write_text("a.png\t1,0,1\nb.png\t1,2,0\n")
    with pytest.raises(DataError, match=r"bad.txt:2: .*'2' is not 1, 0 or -1"):
        build_dataset({"name": "MultiLabelDataset", "image_root": root, "cls_label_path": str(lst)})
    lst.write_text("a.png\t1,0,1\nb.png\t1,0\n")
    with pytest.raises(DataError, match=r"bad.txt:2: 2 labels, expected 3"):
        build_dataset({"name": "MultiLabelDataset", "image_root": root, "cls_label_path": str(lst)})
    with pytest.raises(DataError, match=r"bad.txt:1: 3 labels, expected 4 \(class_num"):
        build_dataset({"name": "MultiLabelDataset", "image_root": root, "cls_label_path": str(lst),
                       "class_num": 4})
    lst.write_text("a.png\t1,0\nmissing.png\t0,1\n")
    with pytest.raises(DataError, match=r"bad.txt:2: image .*missing.png.* does not exist"):
        build_dataset({"name": "MultiLabelDataset", "image_root": root, "cls_label_path": str(lst)})
    with pytest.raises(ValueError, match="not comma-separated"):
        parse_multilabel_line("a.png yes")
    assert parse_multilabel_line("dir x/a b.png") == ("dir x/a b.png", None)
    with pytest.raises(ConfigError, match="Did you mean 'label_ratio'"):
        validate_dataset_config({"name": "MultiLabelDataset", "image_root": "x", "cls_label_path": "y",
                                 "label_ratios": True})


# ---------------------------------------------------------------- losses
def np_paddleclas_mll(x, target, ratio=None, epsilon=None, size_sum=False):
    """PaddleClas MultiLabelLoss._binary_crossentropy + mean, in numpy (no -1 entries)."""
    c = x.shape[1]
    if epsilon is not None:
        target = (1 - epsilon) * target + epsilon / c
    cost = np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x)))
    if ratio is not None:
        mask = (target > 0.5).astype(np.float64)
        weight = np.exp(mask * (1 - ratio) + (1 - mask) * ratio) * (target > -1)
        cost = cost * weight
    return cost.sum(1).mean() if size_sum else cost.mean()


@pytest.mark.parametrize("epsilon,size_sum,use_ratio", [(None, False, False), (0.1, False, False),
                                                        (None, True, True), (0.2, True, False)])
def test_multilabel_loss_matches_paddleclas(epsilon, size_sum, use_ratio):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)) * 3
    y = (rng.random((6, 5)) > 0.5).astype(np.float64)
    ratio = np.tile(rng.random(5), (6, 1))
    labels = np.stack([y, ratio], 1) if use_ratio else y
    cfg = [{"MultiLabelLoss": {"weight": 1.0, "epsilon": epsilon, "size_sum": size_sum, "weight_ratio": use_ratio}}]
    got = float(build_loss(cfg)(T(x.astype(np.float32)), T(labels.astype(np.float32)))["loss"])
    ref = np_paddleclas_mll(x, y, ratio if use_ratio else None, epsilon, size_sum)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_unknown_entries_and_unlabeled_rows_are_excluded():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    y = np.array([[1, -1, 0], [-1, -1, -1], [0, 1, 1], [-1, 0, -1]], np.float32)
    known = y >= 0
    cost = np.maximum(x, 0) - x * np.clip(y, 0, None) + np.log1p(np.exp(-np.abs(x)))
    mean_ref = cost[known].sum() / known.sum()
    rows_ref = (cost * known).sum() / 3  # three rows hold a known entry
    np.testing.assert_allclose(float(multilabel_bce(T(x), T(y))), mean_ref, rtol=1e-5)
    np.testing.assert_allclose(float(multilabel_bce(T(x), T(y), size_sum=True)), rows_ref, rtol=1e-5)
    # the unknown entries get no gradient at all
    xt = T(x, stop_gradient=False)
    multilabel_bce(xt, T(y)).backward()
    assert np.all(xt.grad.numpy()[~known] == 0) and np.all(xt.grad.numpy()[known] != 0)
    # a batch with nothing known: exactly 0, still differentiable
    zero = multilabel_bce(T(x, stop_gradient=False), T(np.full_like(y, -1)))
    assert float(zero) == 0.0


def test_distillation_multilabel_and_dml_weight_ratio():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    y = (rng.random((5, 4)) > 0.5).astype(np.float64)
    ratio = np.tile(rng.random(4), (5, 1))
    labels = T(np.stack([y, ratio], 1).astype(np.float32))
    outputs = {"Student": T(s.astype(np.float32)), "Teacher": T(t.astype(np.float32))}
    loss = build_loss([{"DistillationMultiLabelLoss": {"model_names": ["Student", "Teacher"], "weight_ratio": True,
                                                       "size_sum": True}},
                       {"DistillationDMLLoss": {"weight_ratio": True, "model_name_pairs": [["Student", "Teacher"]]}}])
    parts = loss(outputs, labels)
    np.testing.assert_allclose(float(parts["DistillationMultiLabelLoss_Student"]),
                               np_paddleclas_mll(s, y, ratio, None, True), rtol=1e-5)
    np.testing.assert_allclose(float(parts["DistillationMultiLabelLoss_Teacher"]),
                               np_paddleclas_mll(t, y, ratio, None, True), rtol=1e-5)
    # PaddleClas DMLLoss with gt_label: softmax, C-scaled symmetric KL per element, times ratio2weight, mean
    p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    q = np.exp(t) / np.exp(t).sum(1, keepdims=True)
    eps = 1e-12
    elem = (p * np.log((p + eps) / (q + eps)) + q * np.log((q + eps) / (p + eps))) * 4 / 2
    weight = np.exp(y * (1 - ratio) + (1 - y) * ratio)
    np.testing.assert_allclose(float(parts["DistillationDMLLoss_Student_Teacher"]), (elem * weight).mean(),
                               rtol=1e-5)
    with pytest.raises(ConfigError, match="label_ratio: True"):
        build_loss([{"MultiLabelLoss": {"weight_ratio": True}}])(outputs["Student"], T(y.astype(np.float32)))
    with pytest.raises(ConfigError, match=r"labels \[N, 4\]"):
        build_loss([{"MultiLabelLoss": {}}])(outputs["Student"], T(np.array([0, 1, 2, 3, 0])))
    w = ratio_weight(T(np.array([[[1, -1], [0.25, 0.5]]], np.float32)), 2).numpy()
    np.testing.assert_allclose(w, [[np.exp(0.75), 0.0]], rtol=1e-6)


# ---------------------------------------------------------------- metrics
def np_attr_res(batches, threshold=0.5):
    """PaddleClas get_attr_metrics + AttrMeter.update/res, batch by batch."""
    eps = 1e-20
    acc = {k: 0 for k in ("gt_pos", "gt_neg", "tp", "tn", "fp", "fn")}
    inter, union, ppos, gpos = [], [], [], []
    for out, gt in batches:
        pred = (out > threshold).astype(int)
        pred[gt == -1] = -1
        acc["gt_pos"] = acc["gt_pos"] + (gt == 1).sum(0)
        acc["gt_neg"] = acc["gt_neg"] + (gt == 0).sum(0)
        acc["tp"] = acc["tp"] + ((gt == 1) * (pred == 1)).sum(0)
        acc["tn"] = acc["tn"] + ((gt == 0) * (pred == 0)).sum(0)
        acc["fp"] = acc["fp"] + ((gt == 0) * (pred == 1)).sum(0)
        acc["fn"] = acc["fn"] + ((gt == 1) * (pred == 0)).sum(0)
        gpos += list((gt == 1).sum(1))
        ppos += list((pred == 1).sum(1))
        inter += list(((gt == 1) * (pred == 1)).sum(1))
        union += list(((gt == 1) + (pred == 1)).sum(1))
    pr, nr = acc["tp"] / (acc["gt_pos"] + eps), acc["tn"] / (acc["gt_neg"] + eps)
    prec = acc["tp"] / (acc["tp"] + acc["fp"] + eps)
    label_f1 = np.mean(2 * prec * pr / (prec + pr + eps))
    inter, union, ppos, gpos = map(np.array, (inter, union, ppos, gpos))
    i_acc, i_prec, i_rec = (np.mean(inter / (union + eps)), np.mean(inter / (ppos + eps)),
                            np.mean(inter / (gpos + eps)))
    i_f1 = 2 * i_prec * i_rec / (i_prec + i_rec + eps)
    return [np.mean((pr + nr) / 2), label_f1, np.mean(pr), np.mean(nr), i_f1, i_acc, i_prec, i_rec]


def test_attr_metric_matches_paddleclas_across_batches():
    rng = np.random.default_rng(3)
    batches = [(rng.normal(size=(n, 6)), (rng.random((n, 6)) > 0.6).astype(np.float64)) for n in (5, 3, 7)]
    batches[1][1][0, 2] = -1  # an unknown entry
    metric = build_metrics([{"ATTRMetric": None}])[0]
    metric.reset()
    for out, gt in batches:
        ratio = np.full_like(gt, 0.3)
        metric.update({"Student": T(out.astype(np.float32))}, T(np.stack([gt, ratio], 1).astype(np.float32)))
    got = metric.summary()
    np.testing.assert_allclose([got[k] for k in metric.summary_keys], np_attr_res(batches), rtol=1e-6)
    assert primary_key([metric]) == "ma"
    # counts are summable: two halves merged equal the whole
    a, b = build_metrics([{"ATTRMetric": None}])[0], build_metrics([{"ATTRMetric": None}])[0]
    a.update(T(batches[0][0].astype(np.float32)), T(batches[0][1].astype(np.float32)))
    b.update(T(batches[2][0].astype(np.float32)), T(batches[2][1].astype(np.float32)))
    a.set_counts(a.counts() + b.counts())
    np.testing.assert_allclose([a.summary()[k] for k in a.summary_keys],
                               np_attr_res([batches[0], batches[2]]), rtol=1e-6)


def test_hamming_accuracy_and_mean_accuracy():
    rng = np.random.default_rng(4)
    batches = [(rng.normal(size=(n, 5)), (rng.random((n, 5)) > 0.5).astype(np.float64)) for n in (4, 6)]
    metrics = build_metrics([{"HammingDistance": None}, {"AccuracyScore": None},
                             {"AccuracyScore": {"base": "sample"}}, {"MultilabelMeanAccuracy": None}])
    for out, gt in batches:
        for m in metrics:
            m.update(T(out.astype(np.float32)), T(gt.astype(np.float32)))
    out = np.concatenate([b[0] for b in batches])
    gt = np.concatenate([b[1] for b in batches])
    prob = 1 / (1 + np.exp(-out))
    pred = (prob > 0.5).astype(np.float64)
    # PaddleClas: per-batch sklearn scores averaged with batch-size weights
    ham = sum(np.mean(p != g) * len(g) for p, g in ((pred[:4], gt[:4]), (pred[4:], gt[4:]))) / 10
    assert metrics[0].summary()["HammingDistance"] == pytest.approx(ham)
    assert metrics[1].summary()["AccuracyScore"] == pytest.approx(1 - ham)
    assert metrics[2].summary()["AccuracyScore"] == pytest.approx(np.mean((pred == gt).all(1)))
    best, best_t = 0.0, None
    for i in range(10):
        t = 0.4 + i * (0.9 - 0.4) / 10
        p = (prob > t).astype(int)
        acc = (np.sum((gt == 1) * (p == 1)) + np.sum((gt == 0) * (p == 0))) / len(prob)
        if best <= acc:
            best, best_t = acc, t
    assert metrics[3].summary()["mean_acc"] == pytest.approx(best / 5)
    assert metrics[3].summary()["threshold"] == pytest.approx(best_t)


def np_tpr_at_fpr(logits, labels, max_fpr):
    """PaddleClas TprAtFpr.avg_info, in numpy."""
    z = np.exp(logits - logits.max(1, keepdims=True))
    score = (z[:, 1] / z.sum(1)).astype(np.float32)
    pos, neg = score[labels != 0], score[labels == 0]
    best = 0.0
    for i in range(10000):
        thr = i / 10000.
        tpr = np.sum(pos > thr) / len(pos)
        fpr = np.sum(neg > thr) / len(neg)
        if fpr <= max_fpr and tpr > best:
            best = tpr
    return best


@pytest.mark.parametrize("max_fpr", [0.001, 0.1, 0.3])
def test_tpr_at_fpr_matches_paddleclas(max_fpr):
    rng = np.random.default_rng(5)
    labels = (rng.random(60) > 0.5).astype(np.int64)
    logits = rng.normal(size=(60, 2)) + np.stack([np.zeros(60), labels * 1.5], 1)
    metric = build_metrics([{"TprAtFpr": {"max_fpr": max_fpr}}, {"TopkAcc": {"topk": [1]}}])
    for lo, hi in ((0, 25), (25, 60)):
        for m in metric:
            m.update(T(logits[lo:hi].astype(np.float32)), T(labels[lo:hi]))
    assert metric[0].summary()["tpr"] == pytest.approx(np_tpr_at_fpr(logits, labels, max_fpr))
    assert primary_key(metric) == "tpr"
    # -1 rows are skipped
    metric[0].update(T(np.array([[0.0, 5.0]], np.float32)), T(np.array([-1])))
    assert metric[0].summary()["tpr"] == pytest.approx(np_tpr_at_fpr(logits, labels, max_fpr))
