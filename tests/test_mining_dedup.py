"""De-duplication: vectorised Hamming, planted Fashion-MNIST duplicates caught, distinct images kept."""
import os

import numpy as np
import pytest
from PIL import Image

from ppssld.mining import dedup
from ppssld.data.prepare import read_idx
from ppssld.mining.planted import VARIANTS, plant

ROOT = "/usr/share/datasets/fashion-mnist"
needs_data = pytest.mark.fashion_mnist  # skips without the data set; fails in CI (tests/conftest.py)


def test_hamming_and_matches_equal_naive():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(37, 8), dtype=np.uint8)
    b = rng.integers(0, 256, size=(53, 8), dtype=np.uint8)
    b[5] = a[3]
    naive = np.array([[bin(int.from_bytes(x.tobytes(), "big") ^ int.from_bytes(y.tobytes(), "big")).count("1")
                       for y in b] for x in a])
    assert np.array_equal(dedup.hamming(a, b), naive)
    qi, rj, d = dedup.hash_matches(a, b, 26, block=64)  # tiny blocks: exercises the blocking
    expect = sorted((i, j) for i, j in zip(*np.nonzero(naive <= 26)))
    assert sorted(zip(qi.tolist(), rj.tolist())) == expect
    assert np.array_equal(d, naive[qi, rj]) and d[qi == 3].min() == 0


def test_feature_matches_best_ref_only():
    q = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    r = np.array([[1, 0.01], [-1, 0]], np.float32)
    qi, rj, cos = dedup.feature_matches(q, r, 0.99)
    assert qi.tolist() == [0] and rj.tolist() == [0] and cos[0] > 0.99


@needs_data
def test_planted_duplicates_caught_distinct_kept():
    x_te, y_te = read_idx(f"{ROOT}/t10k-images-idx3-ubyte.gz"), read_idx(f"{ROOT}/t10k-labels-idx1-ubyte.gz")
    x_tr, y_tr = read_idx(f"{ROOT}/train-images-idx3-ubyte.gz"), read_idx(f"{ROOT}/train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(3)
    evals = [Image.fromarray(a) for a in x_te[:150]]
    planted, source = [], []
    for kind in VARIANTS:
        for j in range(20):
            planted.append(plant(evals[j], kind, rng))
            source.append(j)
    # distinct images of the same classes as the eval images
    distinct = [Image.fromarray(a) for a in x_tr[:150]]
    assert set(y_tr[:150].tolist()) == set(y_te[:150].tolist())
    es = [dedup.signature(np.asarray(im)) for im in evals]
    ps = [dedup.signature(np.asarray(im.convert("L"))) for im in planted]
    ds = [dedup.signature(np.asarray(im)) for im in distinct]
    found, stats = dedup.find_duplicates(ps, es)
    caught = {m.query: m.ref for m in found}
    missed = [(list(VARIANTS)[i // 20], i) for i in range(len(ps)) if i not in caught]
    assert missed == [], f"planted copies missed: {missed}"
    assert sum(caught[i] == source[i] for i in caught) >= len(ps) - 2  # matched to their own source
    removed, dstats = dedup.find_duplicates(ds, es)
    # Fashion-MNIST holds genuine near-twins (plain trousers, bags) whose 28-px pixels differ less
    # than a JPEG re-encode: 11 of these 150 are removed (measured at scale in
    # benchmark/results/mining_hash_measure.md). A regression past 12 fails.
    assert len(removed) <= 12, [(m.query, m.ref, m.band) for m in removed]
    assert dstats["rejected_by_pixel_check"] > 50  # the pixel check is what keeps look-alikes
    loose, _ = dedup.find_duplicates(ds, es, pixel_thresholds=None)
    assert len(loose) > 5 * max(1, len(removed))
