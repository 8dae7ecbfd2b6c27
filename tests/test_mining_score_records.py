"""Mining score chunks carry checksum records: a damaged chunk is scored again on resume, named before
selection reads it, and a chunk without a record (older run, or killed between the two files) is adopted
only if it loads completely."""
import json
import logging
import os

import numpy as np
import pytest

from ppssld.arch.zoo import build_backbone
from ppssld.data.transforms import build_transforms
from ppssld.mining.score import load_scores, score_pool
from ppssld.mining.score_files import chunk_path, record_path
from ppssld.teacher.frozen import Teacher
from ppssld.utils.errors import DataError
from ppssld.utils.fingerprint import file_fingerprint
from tests.conftest import write_images

OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 32}},
       {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5] * 3, "std": [0.5] * 3, "order": ""}},
       {"ToCHWImage": None}]
KW = dict(topn=3, batch_size=8, chunk_size=8)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    import paddle

    root = str(tmp_path_factory.mktemp("pool"))
    write_images(root, 0, 4, unlabeled=20)  # 20 images: chunks of 8, 8, 4
    paths = [line.strip() for line in open(os.path.join(root, "unlabeled_list.txt"), encoding="utf-8")]
    paddle.seed(0)
    teacher = Teacher(build_backbone("MobileNetV3_small_x0_35", class_num=4), "random MobileNetV3")
    return root, paths, teacher, build_transforms(OPS)


def _score(pool, out):
    root, paths, teacher, transform = pool
    return score_pool(teacher, paths, root, transform, out, **KW)


def _same(a, b):
    assert np.array_equal(a.prob, b.prob) and np.array_equal(a.cls, b.cls) and np.array_equal(a.ok, b.ok)
    assert np.array_equal(a.hash, b.hash) and np.array_equal(a.grey, b.grey)


def _flip_a_byte(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_every_chunk_has_its_record_and_loads(pool, tmp_path):
    out = str(tmp_path / "s")
    stats = _score(pool, out)
    assert stats["chunks"] == 3
    for c in range(3):
        with open(record_path(out, c), encoding="utf-8") as handle:
            assert json.load(handle) == file_fingerprint(chunk_path(out, c))
    assert load_scores(out).prob.shape == (20, 3)


@pytest.mark.parametrize("damage, why", [
    (_flip_a_byte, r"content hash [0-9a-f]+, recorded [0-9a-f]+ \(same size, other bytes\)"),
    (lambda p: open(p, "r+b").truncate(100), r"100 bytes, recorded \d+")])
def test_damaged_chunk_is_named_before_selection_reads_it(pool, tmp_path, damage, why):
    out = str(tmp_path / "s")
    _score(pool, out)
    damage(chunk_path(out, 1))
    with pytest.raises(DataError, match=rf"1 chunk file\(s\) do not match:\n  {chunk_path(out, 1)}: {why}"):
        load_scores(out)


def test_resume_scores_a_damaged_chunk_again_to_the_same_result(pool, tmp_path, caplog):
    straight, damaged = str(tmp_path / "a"), str(tmp_path / "b")
    _score(pool, straight)
    _score(pool, damaged)
    open(chunk_path(damaged, 2), "r+b").truncate(50)
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.INFO, logger="ppssld"):
        stats = _score(pool, damaged)
    assert stats["done_before"] == 2 and stats["scored_now"] == 1
    assert f"{chunk_path(damaged, 2)} does not match (50 bytes, recorded" in caplog.text
    _same(load_scores(damaged), load_scores(straight))


def test_a_chunk_without_record_is_adopted_if_it_loads_else_scored_again(pool, tmp_path, caplog):
    straight, out = str(tmp_path / "a"), str(tmp_path / "b")
    _score(pool, straight)
    _score(pool, out)
    os.remove(record_path(out, 0))  # scored before records existed (or killed between the two files)
    os.remove(record_path(out, 1))
    open(chunk_path(out, 1), "r+b").truncate(200)  # ... and this one is damaged too
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.INFO, logger="ppssld"):
        stats = _score(pool, out)
    assert stats["done_before"] == 2 and stats["scored_now"] == 1  # chunk 0 adopted, chunk 1 scored again
    assert f"{chunk_path(out, 0)} had no checksum record" in caplog.text
    assert f"{chunk_path(out, 1)} does not match (does not load (BadZipFile" in caplog.text
    assert json.load(open(record_path(out, 0), encoding="utf-8")) == file_fingerprint(chunk_path(out, 0))
    _same(load_scores(out), load_scores(straight))


def test_a_missing_record_is_named_by_the_check(pool, tmp_path):
    from ppssld.mining.score_files import check_chunks

    out = str(tmp_path / "s")
    _score(pool, out)
    os.remove(record_path(out, 2))
    with pytest.raises(DataError, match=rf"{chunk_path(out, 2)}: no checksum record"):
        check_chunks(out, 3)
