"""Soft-label cache chunk checks: the manifest's size and hash record, start-up size checks, header checks as a
chunk is opened, repair on resume, ``--verify``, and caches written before checksums."""
import copy
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from ppssld.cache import store
from ppssld.cache.generate import generate
from ppssld.cache.integrity import verify_cache
from ppssld.cache.reader import SoftLabelCache
from ppssld.engine.builder import build_trainer
from ppssld.utils.errors import DataError
from ppssld.utils.fingerprint import file_fingerprint
from tests.conftest import ROOT, distill_config, save_random_backbone

TOOL = os.path.join(ROOT, "tools", "cache_soft_labels.py")


@pytest.fixture
def cache(tiny_data, tmp_path):
    """A finished cache: 32 images, 2 views, top-2, chunks of 8 (4 per view, 16 files); and its config."""
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4, seed=1)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=2)
    cfg["Global"]["eval_during_train"] = False
    folder = str(tmp_path / "cache")
    generate(cfg, folder, views=2, topk=2, chunk_size=8)
    return cfg, folder


def _manifest(folder):
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _object_array(path):
    np.save(path, np.array([{"not": "numbers"}] * 8, dtype=object), allow_pickle=True)


def _truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[:-8])  # a copy that stopped 8 bytes short


def _flip_last_byte(path):
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(bytes(data))


def _tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    env.pop("PPSSLD_DEBUG", None)
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=120, env=env)


def test_manifest_records_every_chunk_files_size_and_hash(cache):
    _cfg, folder = cache
    manifest = _manifest(folder)
    assert manifest["version"] == 3
    record = manifest["chunks"]
    files = sorted(os.path.relpath(p, folder) for v in range(2) for c in range(4) for p in store.chunk_paths(folder, v, c))
    assert sorted(record) == files and len(files) == 16
    for rel, entry in record.items():
        assert entry == file_fingerprint(os.path.join(folder, rel))  # the project's one hash helper
    stats = verify_cache(folder)
    assert stats["files"] == 16 and stats["checksums"] is True
    assert stats["bytes"] == sum(e["size"] for e in record.values())


@pytest.mark.parametrize("damage, why", [
    (_object_array, r"\d+ bytes, recorded 160; holds Python objects \(dtype object\), not float16 numbers"),
    (_truncate, r"152 bytes, recorded 160; 152 bytes, its header implies 160 \(truncated or padded\)")])
def test_damaged_chunk_is_named_at_start_up(cache, damage, why):
    cfg, folder = cache
    path = store.chunk_paths(folder, 1, 2)[1]
    damage(path)
    with pytest.raises(DataError, match=rf"1 chunk file\(s\) do not match:\n  {path}: {why}"):
        SoftLabelCache(folder)
    trained = copy.deepcopy(cfg)
    trained["Global"]["soft_label_cache"] = folder
    with pytest.raises(DataError, match=r"v0001/c000002.prob.npy"):
        build_trainer(trained)  # refused before any training step


def test_same_size_corruption_is_found_by_verify(cache):
    _cfg, folder = cache
    path = store.chunk_paths(folder, 0, 3)[0]
    _flip_last_byte(path)
    SoftLabelCache(folder)  # start-up checks sizes only: cheap, and the size is right
    with pytest.raises(DataError, match=rf"{path}: content hash [0-9a-f]+, recorded [0-9a-f]+ \(same size"):
        verify_cache(folder)


def _as_version_2(folder):
    manifest = _manifest(folder)
    manifest.pop("chunks")
    manifest["version"] = 2
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    plan = json.load(open(os.path.join(folder, "plan.json"), encoding="utf-8"))
    plan["version"] = 2
    with open(os.path.join(folder, "plan.json"), "w", encoding="utf-8") as handle:
        json.dump(plan, handle)


@pytest.mark.parametrize("damage, why", [(_object_array, "holds Python objects"),
                                         (_truncate, "152 bytes, its header implies 160 \\(truncated or padded\\)"),
                                         (lambda p: open(p, "wb").write(b"junk"), "not a .npy")])
def test_old_cache_works_with_a_log_line_and_names_a_damaged_file_as_it_opens(cache, caplog, damage, why):
    _cfg, folder = cache
    _as_version_2(folder)
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.WARNING, logger="ppssld"):
        opened = SoftLabelCache(folder)
    assert "written before chunk checksums (manifest version 2)" in caplog.text
    good = opened.teacher_output(0, np.arange(8))
    assert good.shape == (8, 4) and np.isfinite(good).all()
    path = store.chunk_paths(folder, 0, 1)[1]
    damage(path)
    with pytest.raises(DataError, match=rf"chunk file {path} is damaged: ({why})"):
        opened.teacher_output(0, np.arange(8, 16))
    with pytest.raises(DataError, match=rf"{path}: ({why})"):
        verify_cache(folder)


def test_resume_rewrites_a_damaged_chunk_and_ends_with_the_same_bytes(cache, tmp_path, caplog):
    cfg, folder = cache
    before = {rel: open(os.path.join(folder, rel), "rb").read() for rel in _manifest(folder)["chunks"]}
    os.remove(os.path.join(folder, "manifest.json"))  # a run killed before its manifest
    path = store.chunk_paths(folder, 0, 1)[0]
    _truncate(path)
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.WARNING, logger="ppssld"):
        stats = generate(cfg, folder, views=2, topk=2, chunk_size=8)
    assert f"{path} is damaged" in caplog.text and stats["chunks_now"] == 1 and stats["done_before"] == 7
    after = {rel: open(os.path.join(folder, rel), "rb").read() for rel in _manifest(folder)["chunks"]}
    assert after == before
    verify_cache(folder)


def test_rerunning_generation_upgrades_an_old_cache(cache):
    cfg, folder = cache
    _as_version_2(folder)
    stats = generate(cfg, folder, views=2, topk=2, chunk_size=8)
    assert stats["chunks_now"] == 0 and stats["done_before"] == 8
    assert _manifest(folder)["version"] == 3 and verify_cache(folder)["checksums"] is True


@pytest.mark.timeout(200)
def test_verify_cli_exit_0_then_2_with_the_list(cache):
    _cfg, folder = cache
    good = _tool("--verify", folder)
    assert good.returncode == 0, good.stderr[-2000:]
    assert json.loads(good.stdout.strip().splitlines()[-1])["files"] == 16
    _truncate(store.chunk_paths(folder, 1, 0)[1])
    _flip_last_byte(store.chunk_paths(folder, 0, 2)[1])
    bad = _tool("--verify", folder)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 chunk file(s) do not match" in errors[0]
    assert "v0001/c000000.prob.npy:" in bad.stderr and "v0000/c000002.prob.npy: content hash" in bad.stderr
    nothing = _tool("--views", "1")
    assert nothing.returncode == 2 and "required to write a cache: -c, --topk, --out" in nothing.stderr


def test_verify_of_a_folder_that_is_no_cache(tmp_path):
    with pytest.raises(DataError, match="no manifest.json there"):
        verify_cache(str(tmp_path))
