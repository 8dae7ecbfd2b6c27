"""Top-k per class selection against a brute-force reference; report chart."""
import os

import numpy as np
import pytest

from ppssld.mining.report import plot_per_class
from ppssld.mining.select import confidence_stats, per_class_counts, select_topk


def reference(prob, cls, k, class_num, valid, min_conf, cap=None):
    picks = {}
    for c in range(class_num):
        cands = [(-prob[i, j], i) for i in range(len(prob)) for j in range(prob.shape[1])
                 if cls[i, j] == c and valid[i] and prob[i, j] >= min_conf]
        for rank, (negp, i) in enumerate(sorted(cands)[:k]):
            if i not in picks or -negp > picks[i][1] or (-negp == picks[i][1] and c < picks[i][0]):
                picks[i] = (c, -negp, rank)
    if cap is not None and len(picks) > cap:
        keep = sorted(picks, key=lambda i: (picks[i][2], -picks[i][1], i))[:cap]
        picks = {i: picks[i] for i in keep}
    return picks


def random_scores(n, class_num, topn, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, class_num)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    order = np.argsort(-p, axis=1)[:, :topn]
    return np.take_along_axis(p, order, 1).astype(np.float32), order.astype(np.int32)


@pytest.mark.parametrize("topn,min_conf,cap", [(10, 0.0, None), (3, 0.0, None), (3, 0.3, None), (10, 0.0, 25)])
def test_select_matches_brute_force(topn, min_conf, cap):
    prob, cls = random_scores(300, 10, topn, seed=topn)
    valid = np.ones(300, bool)
    valid[::7] = False
    sel = select_topk(prob, cls, k=8, class_num=10, valid=valid, min_conf=min_conf, cap=cap)
    ref = reference(prob, cls, 8, 10, valid, min_conf, cap)
    got = {int(i): (int(c), float(p)) for i, c, p in zip(sel.index, sel.label, sel.prob)}
    assert got.keys() == ref.keys()
    assert all(got[i][0] == ref[i][0] and got[i][1] == pytest.approx(ref[i][1]) for i in got)
    assert len(set(sel.index.tolist())) == len(sel.index)  # each image once
    assert valid[sel.index].all()
    counts = per_class_counts(sel, 10)
    assert sum(counts) == len(sel.index) and max(counts) <= 8
    if cap is not None:
        assert len(sel.index) == cap


def test_overlap_goes_to_most_probable_class_and_short_classes():
    prob = np.array([[0.6, 0.4], [0.5, 0.45], [0.9, 0.1]], np.float32)
    cls = np.array([[0, 1], [1, 0], [2, 0]], np.int32)
    sel = select_topk(prob, cls, k=2, class_num=4)
    assert dict(zip(sel.index.tolist(), sel.label.tolist())) == {0: 0, 1: 1, 2: 2}
    assert per_class_counts(sel, 4) == [1, 1, 1, 0]
    assert sel.candidates.tolist() == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="outside"):
        select_topk(prob, cls, k=2, class_num=2)
    with pytest.raises(ValueError, match="k must be"):
        select_topk(prob, cls, k=0, class_num=4)


def test_confidence_stats_and_plot(tmp_path):
    st = confidence_stats(np.array([0.2, 0.4, 0.9]))
    assert st["count"] == 3 and st["min"] == pytest.approx(0.2) and st["median"] == pytest.approx(0.4)
    assert confidence_stats(np.array([])) == {"count": 0}
    path = str(tmp_path / "per_class.png")
    plot_per_class([5, 3, 0, 5], path, k=5, class_names=["a", "b", "c", "d"])
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_pool_list_repeats_are_scored_once(tmp_path, caplog):
    from ppssld.mining.mine import pool_paths

    pool = tmp_path / "pool.txt"
    pool.write_text("a.jpg\nb.jpg 0\na.jpg\n./a.jpg\nc.jpg\n")
    with caplog.at_level("INFO", logger="ppssld.mining.mine"):
        paths, root = pool_paths(str(pool), str(tmp_path))
    assert paths == ["a.jpg", "b.jpg", "c.jpg"] and root == str(tmp_path)
    assert any("2 repeated line(s) scored once" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_streaming_topk_equals_one_shot(chunk):
    from ppssld.mining.select import StreamingTopK

    prob, cls = random_scores(400, 12, 4, seed=chunk)
    prob = np.round(prob, 2)  # many ties: a later image that only ties the k-th must lose
    valid = np.ones(400, bool)
    valid[::5] = False
    for cap in (None, 30):
        ref = select_topk(prob, cls, k=6, class_num=12, valid=valid, min_conf=0.05, cap=cap)
        acc = StreamingTopK(6, 12, min_conf=0.05)
        for s in range(0, 400, chunk):
            acc.add(prob[s:s + chunk], cls[s:s + chunk], valid[s:s + chunk], offset=s)
        assert len(acc.img) <= 6 * 12  # bounded by C x k, whatever the pool size
        got = acc.result(cap)
        for a, b in zip(got, ref):
            assert np.array_equal(a, b)
        brute = reference(prob, cls, 6, 12, valid, 0.05, cap)
        assert set(got.index.tolist()) == set(brute)
    with pytest.raises(ValueError, match="index order"):
        acc.add(prob[:2], cls[:2], offset=0)
