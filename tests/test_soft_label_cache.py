"""Soft-label cache: generation (resume, shards), stale-cache refusals, and training from it equals online."""
import copy
import glob
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from ppssld.cache import store
from ppssld.cache.generate import generate
from ppssld.cache.manifest import read_manifest as load_manifest
from ppssld.cache.reader import rebuild, view_for_epoch
from ppssld.engine.builder import build_trainer
from ppssld.utils.config import load_config
from ppssld.utils.errors import ConfigError, DataError
from tests.conftest import ROOT, distill_config, save_random_backbone

VIEWS, CLASSES = 2, 4


@pytest.fixture
def setup(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), name="ResNet18", class_num=CLASSES, seed=1)
    student = save_random_backbone(str(tmp_path / "student.pdparams"), name="MobileNetV3_small_x0_35",
                                   class_num=CLASSES, seed=2)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=2)
    cfg["Arch"]["models"][1]["Student"]["pretrained"] = student  # same start online and from the cache
    cfg["Global"]["eval_during_train"] = False
    return cfg, tmp_path


def _files(folder):
    found = {}
    for base, _dirs, names in os.walk(folder):
        for name in names:
            if name.endswith(".npy"):
                path = os.path.join(base, name)
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, folder)] = handle.read()
    return found


def _student(trainer):
    return {k: v.numpy().copy() for k, v in trainer.model.state_dict().items() if k.startswith("Student.")}


def _train_from(cfg, tmp, cache, tag, targets=None):
    cached_cfg = copy.deepcopy(cfg)
    cached_cfg["Global"]["output_dir"] = str(tmp / tag)
    cached_cfg["Global"]["soft_label_cache"] = cache
    trainer = build_trainer(cached_cfg)
    assert not any(k.startswith("Teacher.") for k in trainer.model.state_dict())  # no teacher built
    if targets is not None:
        _teacher_outputs(trainer, targets)
    trainer.fit()
    return _student(trainer)


def _distance(a, b):
    return np.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a))


def _teacher_outputs(trainer, seen=None):
    """Record every batch's teacher output (what the losses receive) during ``trainer.fit()``."""
    seen = [] if seen is None else seen
    trainer.model.Teacher.register_forward_post_hook(lambda _layer, _inputs, out: seen.append(out.numpy().copy()))
    return seen


def _stored(cache):
    return np.concatenate([np.load(p) for p in sorted(glob.glob(os.path.join(cache, "v*", "*.prob.npy")))])


def test_training_from_an_exact_cache_equals_online_distillation(setup):
    """V = epochs, v(e) = e, K = class count, float32: the cache stores the teacher's logits, so training
    from it repeats online distillation's arithmetic. What may still differ is the teacher's logits
    themselves, wherever a CPU's kernels sum differently for another batch (oneDNN on Intel Xeons: not on
    the AMD EPYC of 2026-12-07). That one source is measured here and bounds both comparisons."""
    cfg, tmp = setup
    stats = generate(cfg, str(tmp / "cache"), views=VIEWS, topk=CLASSES, chunk_size=16, prob_dtype="float32")
    assert stats["images_now"] == 32 * VIEWS
    assert load_manifest(str(tmp / "cache"))["values"] == "logits"
    online = build_trainer(copy.deepcopy(cfg))
    online_targets = _teacher_outputs(online)
    online.fit()
    a = _student(online)
    cached_targets = []
    b = _train_from(cfg, tmp, str(tmp / "cache"), "out_cache", cached_targets)
    assert a.keys() == b.keys() and len(online_targets) == len(cached_targets) == 2 * 4
    # the batch-composition noise: the same cache generated in teacher batches of 3 instead of 8
    generate(cfg, str(tmp / "cache3"), views=VIEWS, topk=CLASSES, chunk_size=16, prob_dtype="float32", batch_size=3)
    logit_noise = float(np.abs(_stored(str(tmp / "cache")) - _stored(str(tmp / "cache3"))).max())
    target_gap = max(float(np.abs(x - y).max()) for x, y in zip(online_targets, cached_targets))
    start = {k: paddle.load(cfg["Arch"]["models"][1]["Student"]["pretrained"])[k[len("Student."):]].numpy()
             for k in a}
    moved, apart = _distance(a, start), _distance(a, b)
    assert moved > 1.0  # training did move the student
    if logit_noise == 0.0:  # the teacher's logits do not depend on the batch here: bit for bit
        assert target_gap == 0.0 and apart == 0.0, (target_gap, apart)
        return
    assert target_gap <= 4 * logit_noise, (target_gap, logit_noise)
    noise = _distance(b, _train_from(cfg, tmp, str(tmp / "cache3"), "out_cache3"))
    assert apart <= 3 * noise + 1e-6, (apart, noise)
    assert apart < 1e-3 * moved, (apart, moved)


def test_what_an_exact_cache_stores_and_what_it_refuses(setup):
    """auto: logits only for K = class count in float32; a probability cache with K = C still serves the
    same teacher distribution; --values logits for a partial cache is refused by name."""
    from ppssld.cache.generate import stored_values
    from ppssld.cache.reader import SoftLabelCache

    cfg, tmp = setup
    assert stored_values("auto", CLASSES, CLASSES, "float32") == "logits"
    assert stored_values("auto", CLASSES, CLASSES, "float16") == "probs"
    assert stored_values("auto", 2, CLASSES, "float32") == "probs"
    with pytest.raises(ConfigError, match="--values logits needs --topk 4"):
        generate(cfg, str(tmp / "bad"), views=1, topk=2, chunk_size=16, prob_dtype="float32", values="logits")
    generate(cfg, str(tmp / "lg"), views=1, topk=CLASSES, chunk_size=16, prob_dtype="float32")
    generate(cfg, str(tmp / "pr"), views=1, topk=CLASSES, chunk_size=16, prob_dtype="float32", values="probs")
    logits, probs = SoftLabelCache(str(tmp / "lg")), SoftLabelCache(str(tmp / "pr"))
    assert (logits.values, probs.values) == ("logits", "probs")
    index = np.arange(32)
    np.testing.assert_allclose(logits.distribution(0, index), probs.distribution(0, index), atol=1e-6)
    out = logits.teacher_output(0, index)
    soft = np.exp(out - out.max(1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), probs.distribution(0, index), atol=1e-6)


def test_the_student_starts_from_the_same_weights_online_and_from_the_cache(setup):
    """Each model is initialised from its own seeded stream: building no teacher changes nothing for the student."""
    cfg, tmp = setup
    cfg = copy.deepcopy(cfg)
    del cfg["Arch"]["models"][1]["Student"]["pretrained"]  # a random start, drawn from Global.seed
    generate(cfg, str(tmp / "cache"), views=VIEWS, topk=CLASSES, chunk_size=16)
    online = _student(build_trainer(copy.deepcopy(cfg)))
    cached_cfg = copy.deepcopy(cfg)
    cached_cfg["Global"]["output_dir"] = str(tmp / "out_cache")
    cached_cfg["Global"]["soft_label_cache"] = str(tmp / "cache")
    cached = _student(build_trainer(cached_cfg))
    assert online.keys() == cached.keys()
    assert all(np.array_equal(online[k], cached[k]) for k in online)
    cfg["Global"]["seed"] = int(cfg["Global"].get("seed", 42)) + 1  # and the seed does move the start
    other = _student(build_trainer(copy.deepcopy(cfg)))
    assert any(not np.array_equal(online[k], other[k]) for k in online if "weight" in k)


def test_a_run_killed_mid_chunk_resumes_to_the_same_bytes(setup, monkeypatch):
    cfg, tmp = setup
    straight, resumed = str(tmp / "straight"), str(tmp / "resumed")
    generate(cfg, straight, views=VIEWS, topk=2, chunk_size=8)
    real, calls = store._save, {"n": 0}

    def failing_save(path, array):
        calls["n"] += 1
        if calls["n"] == 6:  # chunk 2 of view 0: its classes are written, its probabilities are not
            raise KeyboardInterrupt("injected kill")
        real(path, array)

    monkeypatch.setattr(store, "_save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, resumed, views=VIEWS, topk=2, chunk_size=8)
    monkeypatch.setattr(store, "_save", real)
    assert not os.path.exists(os.path.join(resumed, "manifest.json"))
    assert os.path.isfile(store.chunk_paths(resumed, 0, 2)[0]) and not store.chunk_done(resumed, 0, 2)
    assert not [n for n in os.listdir(os.path.join(resumed, "v0000")) if n.endswith(".tmp")]  # nothing half-written
    stats = generate(cfg, resumed, views=VIEWS, topk=2, chunk_size=8)
    assert stats["done_before"] == 2 and stats["chunks_now"] == 2 * 4 - 2
    a, b = _files(straight), _files(resumed)
    assert len(a) == 2 * 2 * 4 and a == b
    probs = np.load(store.chunk_paths(straight, 1, 0)[1])
    classes = np.load(store.chunk_paths(straight, 1, 0)[0])
    assert probs.dtype == np.float16 and classes.dtype == np.uint8 and probs.shape == (8, 2)
    assert np.all(np.diff(probs.astype(np.float32), axis=1) <= 0)  # descending
    # another teacher batch order cannot change a chunk: a view differs from the other view
    assert not np.array_equal(np.load(store.chunk_paths(straight, 0, 0)[1]), probs)


def test_two_processes_shard_the_cache_with_the_same_bytes(setup):
    cfg, tmp = setup
    path = str(tmp / "cfg.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(cfg, handle)
    single, sharded = str(tmp / "single"), str(tmp / "sharded")
    generate(cfg, single, views=VIEWS, topk=3, chunk_size=8)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(tmp / "log"), os.path.join(ROOT, "tools", "cache_soft_labels.py"), "-c", path, "--views", str(VIEWS),
           "--topk", "3", "--out", sharded, "--chunk-size", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp), check=False)
    logs = "".join(open(os.path.join(tmp, "log", n), encoding="utf-8", errors="replace").read()
                   for n in sorted(os.listdir(tmp / "log"))) if os.path.isdir(tmp / "log") else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs[-3000:]
    assert '"rank": 1' in logs and '"rank": 0' in logs  # both ranks wrote chunks
    assert _files(single) == _files(sharded)
    manifest = yaml.safe_load(open(os.path.join(sharded, "manifest.json"), encoding="utf-8"))
    assert manifest["ranks"] == 2 and manifest["views"] == VIEWS and manifest["topk"] == 3


@pytest.mark.parametrize("override, field", [
    (lambda c, t: c["Global"].update(seed=8), "seed"),
    (lambda c, t: c["Arch"]["models"][0]["Teacher"].update(
        pretrained=save_random_backbone(str(t / "other.pdparams"), class_num=CLASSES, seed=9)), "teacher_weights"),
    (lambda c, t: c["DataLoader"]["Train"]["dataset"]["transform_ops"].pop(1), "transforms"),
    (lambda c, t: c["DataLoader"]["Train"]["dataset"].pop("unlabeled_label_path"), "lists"),
])
def test_a_stale_cache_is_refused_naming_the_field(setup, override, field):
    cfg, tmp = setup
    cache = str(tmp / "cache")
    generate(cfg, cache, views=1, topk=2, chunk_size=16)
    stale = copy.deepcopy(cfg)
    override(stale, tmp)
    stale["Global"]["soft_label_cache"] = cache
    with pytest.raises(ConfigError, match=rf"stale: it was built with other {field}\b"):
        build_trainer(stale)


def test_refusals_and_cli_exit_2(setup):
    cfg, tmp = setup
    bn = copy.deepcopy(cfg)
    bn["Arch"]["teacher_bn_mode"] = "train"
    with pytest.raises(ConfigError, match="teacher_bn_mode=train.*batch statistics"):
        generate(bn, str(tmp / "c1"), views=1, topk=2)
    mix = copy.deepcopy(cfg)
    mix["DataLoader"]["Train"]["dataset"]["batch_transform_ops"] = [{"MixupOperator": {"alpha": 0.2}}]
    with pytest.raises(ConfigError, match="batch_transform_ops.*Mixup"):
        generate(mix, str(tmp / "c2"), views=1, topk=2)
    cache = str(tmp / "cache")
    generate(cfg, cache, views=1, topk=2, chunk_size=16)
    feature = copy.deepcopy(cfg)
    feature["Global"]["soft_label_cache"] = cache
    feature["Loss"]["Train"] = [{"DistillationDistanceLoss": {"weight": 1.0, "mode": "l2",
                                                               "model_name_pairs": [["Student", "Teacher"]]}}]
    with pytest.raises(ConfigError, match="DistillationDistanceLoss.*raw logits"):
        build_trainer(feature)
    other = copy.deepcopy(cfg)
    other["Global"]["seed"] = 99
    with pytest.raises(ConfigError, match="holds \\(part of\\) another cache"):
        generate(other, cache, views=1, topk=2, chunk_size=16)
    path = str(tmp / "cfg.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(cfg, handle)
    with pytest.raises(ConfigError, match="Global.soft_label_cache must be a folder path"):
        load_config(path, ["Global.soft_label_cache=3"])
    missing = copy.deepcopy(cfg)
    missing["Global"]["soft_label_cache"] = str(tmp / "nowhere")
    with pytest.raises(DataError, match="no manifest.json there"):
        build_trainer(missing)
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "cache_soft_labels.py"), "-c", path,
                           "--views", "1", "--topk", "9", "--out", str(tmp / "c3")],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--topk must be in [1, 4]" in proc.stderr


def test_view_schedule_and_rebuild():
    assert [view_for_epoch(e, 5, 0) for e in range(1, 6)] == [0, 1, 2, 3, 4]
    later = [view_for_epoch(e, 5, 0) for e in range(6, 11)]
    assert sorted(later) == [0, 1, 2, 3, 4] and later == [view_for_epoch(e, 5, 0) for e in range(6, 11)]
    cycles = [tuple(view_for_epoch(e, 5, 0) for e in range(1 + 5 * c, 6 + 5 * c)) for c in range(1, 5)]
    assert all(sorted(c) == [0, 1, 2, 3, 4] for c in cycles) and len(set(cycles)) > 1  # fresh orders
    probs = np.array([[0.6, 0.3]], np.float32)
    classes = np.array([[2, 0]])
    np.testing.assert_allclose(rebuild(probs, classes, 4, "spread"), [[0.3, 0.05, 0.6, 0.05]], atol=1e-7)
    np.testing.assert_allclose(rebuild(probs, classes, 4, "renormalise"), [[1 / 3, 0, 2 / 3, 0]], atol=1e-7)


@pytest.mark.parametrize("loss", [
    {"JSDivLoss": {"temperature": 2.0}}, {"SymmetricKLLoss": {}}, {"KLDivLoss": {"temperature": 4.0}},
    {"DistillationDMLLoss": {}}, {"DistillationCELoss": {}},
    {"DistillationDKDLoss": {"temperature": 2.0}}, {"DistillationDISTLoss": {}},
    {"DistillationWSLLoss": {"temperature": 2.0}}])
def test_every_softmax_loss_reads_the_cached_log_p_as_the_teacher_logits(loss):
    """What the cache hands the losses (log of the stored softmax) gives the online values at any temperature."""
    from ppssld.cache.reader import as_logits
    from ppssld.loss import build_loss

    (name, params), = loss.items()
    fn = build_loss([{name: dict(params, model_name_pairs=[["Student", "Teacher"]])}])
    rng = np.random.default_rng(0)
    student = paddle.to_tensor(rng.normal(size=(6, 5)).astype("float32"))
    teacher = rng.normal(size=(6, 5)).astype("float32") * 3
    probs = np.exp(teacher - teacher.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = paddle.to_tensor(np.array([0, 1, 2, 3, 4, -1]))
    online = float(fn({"Student": student, "Teacher": paddle.to_tensor(teacher)}, labels)["loss"])
    cached = float(fn({"Student": student, "Teacher": paddle.to_tensor(as_logits(probs))}, labels)["loss"])
    assert abs(online - cached) <= 1e-5 * max(1.0, abs(online)), (online, cached)


def test_ranks_take_alternate_chunks_and_rank0_merges(setup, monkeypatch):
    """The sharding rule in one process: rank 0 waits for rank 1's chunks, then writes the manifest."""
    import ppssld.cache.generate as gen
    from ppssld.utils.errors import DataError as Timeout

    cfg, tmp = setup
    single, sharded = str(tmp / "single"), str(tmp / "sharded")
    generate(cfg, single, views=VIEWS, topk=3, chunk_size=8)
    monkeypatch.setattr(gen, "dist_env", lambda: (0, 2))
    with pytest.raises(Timeout, match="waiting for 4 chunks of other ranks"):
        generate(cfg, sharded, views=VIEWS, topk=3, chunk_size=8, wait_timeout=0.0)
    assert not os.path.exists(os.path.join(sharded, "manifest.json"))
    monkeypatch.setattr(gen, "dist_env", lambda: (1, 2))
    stats = generate(cfg, sharded, views=VIEWS, topk=3, chunk_size=8)
    assert stats["chunks_now"] == 4 and not os.path.exists(os.path.join(sharded, "manifest.json"))
    monkeypatch.setattr(gen, "dist_env", lambda: (0, 2))
    assert generate(cfg, sharded, views=VIEWS, topk=3, chunk_size=8)["chunks_now"] == 0
    assert os.path.isfile(os.path.join(sharded, "manifest.json")) and _files(single) == _files(sharded)


def test_cached_targets_travel_with_the_batch_from_workers(setup):
    """The cached teacher outputs are computed where samples are read and arrive as the batch's third field: with
    0 and 2 loader workers the losses get the same targets, each row the stored top-2 rebuilt for its image."""
    from ppssld.cache.reader import SoftLabelCache, as_logits

    cfg, tmp = setup
    cfg["Global"]["epochs"] = 1
    generate(cfg, str(tmp / "cache_top2"), views=1, topk=2, chunk_size=16, prob_dtype="float16")
    seen = {}
    for workers in (0, 2):
        run = copy.deepcopy(cfg)
        run["DataLoader"]["Train"]["loader"]["num_workers"] = workers
        seen[workers] = []
        _train_from(run, tmp, str(tmp / "cache_top2"), f"out_w{workers}", seen[workers])
    assert len(seen[0]) == len(seen[2]) == 4
    for x, y in zip(seen[0], seen[2]):
        np.testing.assert_array_equal(x, y)
    cache = SoftLabelCache(str(tmp / "cache_top2"))
    expected = as_logits(cache.distribution(0, np.arange(cache.manifest["num_images"])))
    rows = np.concatenate(seen[0])
    assert rows.shape == (32, CLASSES)
    for row in rows:  # every target is some image's rebuilt top-2 (bitwise), and together they cover the epoch
        assert (np.abs(expected - row).max(axis=1) == 0).any()
    assert len({tuple(r) for r in rows}) == len({tuple(r) for r in expected})
