"""Scoring: resume equals an uninterrupted run, shards merge to the same result, bad images reported;
end-to-end CLI on a Fashion-MNIST fixture with planted duplicates."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppssld.arch.zoo import build_backbone
from ppssld.data.lists.label_list import read_label_list
from ppssld.data.transforms import build_transforms
from ppssld.data.prepare import read_idx
from ppssld.mining.dedup.planted import make_planted_set
from ppssld.mining.score import load_scores, score_pool
from ppssld.teacher.frozen import Teacher, teacher_from_config, teacher_from_weights
from ppssld.utils.errors import ConfigError, DataError

ROOT = "/usr/share/datasets/fashion-mnist"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.fashion_mnist  # skips without the data set; fails in CI (tests/conftest.py)
OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 32}},
       {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.286] * 3, "std": [0.353] * 3, "order": ""}},
       {"ToCHWImage": None}]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mine"))
    x_te, y_te = read_idx(f"{ROOT}/t10k-images-idx3-ubyte.gz"), read_idx(f"{ROOT}/t10k-labels-idx1-ubyte.gz")
    x_tr = read_idx(f"{ROOT}/train-images-idx3-ubyte.gz")
    info = make_planted_set(out, x_te[:60], y_te[:60], x_tr[:60], planted_per_kind=4, seed=1, corrupt=2)
    paddle.seed(0)
    model = build_backbone("MobileNetV3_small_x0_35", class_num=10)
    weights = os.path.join(out, "teacher.pdparams")
    paddle.save(model.state_dict(), weights)
    config = os.path.join(out, "teacher.yaml")
    import yaml
    with open(config, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"Arch": {"name": "MobileNetV3_small_x0_35", "class_num": 10, "pretrained": weights},
                        "DataLoader": {"Eval": {"dataset": {"name": "ImageNetDataset", "transform_ops": OPS}}}},
                       handle)
    return out, info, weights, config


def _pool(out):
    return [line.strip() for line in open(os.path.join(out, "pool_list.txt"), encoding="utf-8") if line.strip()]


def _teacher(weights):
    return teacher_from_weights("MobileNetV3_small_x0_35", weights, 10)


def _same(a, b):
    for field in ("ok", "prob", "cls", "hash", "thumb", "grey", "side"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.error == b.error
    assert (a.feature is None) == (b.feature is None)
    if a.feature is not None:
        assert np.array_equal(a.feature, b.feature)


def test_resume_and_shards_equal_uninterrupted(fixture, tmp_path):
    out, info, weights, _ = fixture
    paths, teacher, tf = _pool(out), _teacher(weights), build_transforms(OPS)
    root = os.path.join(out, "images")
    kw = dict(topn=4, batch_size=8, chunk_size=16, features=True)
    full = str(tmp_path / "full")
    loaded, saved = {}, {}
    score_pool(teacher, paths, root, tf, full, on_loaded=lambda c, a: loaded.setdefault(c, (a, set(saved))),
               on_chunk=lambda c, a: saved.setdefault(c, a), **kw)
    ref = load_scores(full)
    # signatures are handed over before the teacher scores their chunk, equal to what is saved
    assert sorted(loaded) == sorted(saved) and all(c not in before for c, (_a, before) in loaded.items())
    for c, (arrays, _before) in loaded.items():
        assert set(arrays) == {"index", "ok", "hash", "thumb", "grey", "side"}
        assert all(np.array_equal(arrays[k], saved[c][k]) and arrays[k].dtype == saved[c][k].dtype for k in arrays)
    part = str(tmp_path / "part")
    stats = score_pool(teacher, paths, root, tf, part, max_chunks=2, **kw)  # "killed" after 2 chunks
    assert stats["scored_now"] == 2
    with pytest.raises(DataError, match="unfinished"):
        load_scores(part)
    stats = score_pool(teacher, paths, root, tf, part, **kw)
    assert stats["done_before"] == 2 and stats["scored_now"] == stats["chunks"] - 2
    _same(load_scores(part), ref)
    shard = str(tmp_path / "shard")
    score_pool(teacher, paths, root, tf, shard, rank=0, world_size=2, **kw)
    score_pool(teacher, paths, root, tf, shard, rank=1, world_size=2, **kw)
    _same(load_scores(shard), ref)
    # numbers against the model itself
    i = paths.index(info["distinct"][0])
    batch = np.stack([tf(open(os.path.join(root, paths[i]), "rb").read())])
    probs, feat = teacher(batch, features=True)
    assert ref.cls[i].tolist() == np.argsort(-probs[0], kind="stable")[:4].tolist()
    assert np.allclose(ref.prob[i], np.sort(probs[0])[::-1][:4], atol=1e-6)
    assert np.allclose(ref.feature[i], feat[0], atol=2e-3 * np.abs(feat).max())
    # bad images: reported with their error, never fatal
    bad = [paths.index(p) for p in info["corrupt"]]
    assert not ref.ok[bad].any()
    assert "empty" in ref.error[bad[0]] and "not a decodable image" in ref.error[bad[1]]
    assert ref.ok.sum() == len(paths) - len(bad) and (ref.cls[bad] == -1).all()
    with pytest.raises(DataError, match="another run"):
        score_pool(teacher, paths, root, tf, full, topn=3, batch_size=8, chunk_size=16, features=True)


def test_teacher_sources(fixture, tmp_path):
    out, _, weights, config = fixture
    from ppssld.utils.config import load_config
    cfg = load_config(config)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    a = teacher_from_config(cfg)(x)[0]
    b = _teacher(weights)(x)[0]
    assert np.array_equal(a, b) and np.allclose(a.sum(1), 1, atol=1e-5)
    cfg["Arch"].pop("pretrained")
    with pytest.raises(ConfigError, match="random teacher"):
        teacher_from_config(cfg)
    prefix = str(tmp_path / "inference")
    layer = _teacher(weights).layer
    paddle.jit.save(layer, prefix, input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32")])
    c = Teacher(paddle.jit.load(prefix), "inference")
    assert np.allclose(c(x)[0], b, atol=1e-5)


def test_cli_end_to_end(fixture, tmp_path):
    out, info, _, config = fixture
    res = str(tmp_path / "res")
    cmd = [sys.executable, os.path.join(REPO, "tools", "select_unlabeled.py"), "-c", config,
           "--pool", os.path.join(out, "pool_list.txt"), "--image-root", os.path.join(out, "images"),
           "--eval-list", os.path.join(out, "val_list.txt"), "--k", "5", "--out", res, "--chunk-size", "32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.load(open(os.path.join(res, "report.json"), encoding="utf-8"))
    removed = {r["pool_image"]: r["matched_image"] for r in report["removed_duplicates"]}
    for pool_img, eval_img in info["planted"].items():
        assert pool_img in removed, pool_img
    assert sum(removed[p] == e for p, e in info["planted"].items()) >= len(info["planted"]) - 1
    genuine = [p for p in removed if p not in info["planted"]]
    assert len(genuine) <= 6 and report["dedup"]["removed"] == len(removed)
    assert report["scored"] == len(_pool(out)) - 2 and report["unreadable"] == 2
    assert sorted(u["image"] for u in report["unreadable_images"]) == sorted(info["corrupt"])
    rows = read_label_list(os.path.join(res, "selected_list.txt"), unlabeled=True)
    assert all(r.label == -1 for r in rows) and len(rows) == report["selected"] == sum(report["per_class"])
    chosen = {r.path for r in rows}
    assert not chosen & set(removed) and not chosen & set(info["corrupt"])
    assert max(report["per_class"]) <= 5 and len(chosen) == len(rows)
    assert len(report["short_classes"]) == sum(c < 5 for c in report["per_class"])
    # beside the list: the same images in the same order, each with the class it was selected for
    classes = read_label_list(os.path.join(res, "selected_classes.txt"))
    assert [r.path for r in classes] == [r.path for r in rows]
    assert [sum(r.label == c for r in classes) for c in range(len(report["per_class"]))] == report["per_class"]
    assert open(os.path.join(res, "per_class.png"), "rb").read(4) == b"\x89PNG"


def test_two_process_launch_selects_as_one_process(fixture, tmp_path):
    """Scoring, reference hashing and de-duplication sharded over 2 ranks: same list as 1 process."""
    out, info, _, config = fixture
    args = ["-c", config, "--pool", os.path.join(out, "pool_list.txt"), "--image-root", os.path.join(out, "images"),
            "--eval-list", os.path.join(out, "val_list.txt"), "--k", "6", "--chunk-size", "16"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    tool = os.path.join(REPO, "tools", "select_unlabeled.py")
    results = {}
    for nproc in (1, 2):
        res = str(tmp_path / f"res{nproc}")
        cmd = [sys.executable, tool] if nproc == 1 else [
            sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
            "--log_dir", str(tmp_path / "logs"), tool]
        proc = subprocess.run(cmd + args + ["--out", res], capture_output=True, text=True, timeout=120, env=env,
                              cwd=str(tmp_path))
        logs = "".join(open(os.path.join(tmp_path, "logs", f), errors="replace").read()[-2000:]
                       for f in sorted(os.listdir(tmp_path / "logs"))) if nproc == 2 else ""
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
        report = json.load(open(os.path.join(res, "report.json"), encoding="utf-8"))
        dedup_files = sorted(f for f in os.listdir(os.path.join(res, "scores")) if f.startswith("dedup_"))
        results[nproc] = (open(os.path.join(res, "selected_list.txt"), encoding="utf-8").read(),
                          [r["pool_image"] for r in report["removed_duplicates"]], report["scoring"]["world_size"],
                          len(dedup_files))
    assert results[1][0] == results[2][0] and results[1][0].count("\n") > 20
    assert results[1][1] == results[2][1] and set(info["planted"]) <= set(results[2][1])
    assert results[1][2:] == (1, results[1][3]) and results[2][2] == 2 and results[2][3] == results[1][3] > 1
