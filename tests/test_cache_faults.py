"""Soft-label cache generation under faults, through the CLI: ``kill -9`` halfway through a chunk file's
write, and a full disk (ENOSPC) there; each then re-run with the same command ends byte-identical to an
uninterrupted run and passes ``--verify`` (quick, deterministic versions of ``benchmark/robustness/fault_injection.py``'s
``cache`` and ``disk`` parts)."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from ppssld.cache import store
from ppssld.cache.generate import PLAN, generate
from ppssld.cache.integrity import damaged_chunk
from ppssld.utils.folder_lock import LOCK_NAME
from tests.conftest import ROOT, distill_config, save_random_backbone

TOOL = os.path.join(ROOT, "tools", "cache_soft_labels.py")
INJECT = os.path.join(ROOT, "tests", "fault_inject.py")
SHAPE = ["--views", "2", "--topk", "2", "--chunk-size", "8"]  # 32 images: 4 chunks per view, 16 files
FAULT_AT = 6  # the 6th file written: view 0 chunk 2's .prob (its .cls is complete)


@pytest.fixture
def setup(tiny_data, tmp_path):
    """The config as a YAML file and an uninterrupted cache of it (written in this process)."""
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4, seed=1)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=2)
    path = str(tmp_path / "cfg.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(cfg, handle)
    reference = str(tmp_path / "reference")
    generate(cfg, reference, views=2, topk=2, chunk_size=8)
    return path, reference, tmp_path


def _run(*args, inject=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    env.pop("PPSSLD_DEBUG", None)
    head = [sys.executable, INJECT, inject[0], str(inject[1]), TOOL] if inject else [sys.executable, TOOL]
    return subprocess.run(head + list(args), capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)


def _contents(folder):
    """Every file of a cache folder but its lock: ``{relative path: bytes}`` (the manifest as parsed JSON)."""
    found = {}
    for base, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, folder)
            if name == LOCK_NAME:
                continue
            with open(path, "rb") as handle:
                found[rel] = json.loads(handle.read()) if name.endswith(".json") else handle.read()
    return found


def _temporaries(folder):
    return sorted(os.path.relpath(os.path.join(b, n), folder) for b, _d, names in os.walk(folder)
                  for n in names if n.endswith(".tmp"))


def _resume_equals_reference(cfg_path, out, reference):
    done = _run("-c", cfg_path, *SHAPE, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["done_before"] == 2  # chunks 0 and 1 kept
    assert _temporaries(out) == []
    assert _contents(out) == _contents(reference)  # chunk bytes, plan and manifest (it has no timing field)
    verify = _run("--verify", out)
    assert verify.returncode == 0 and json.loads(verify.stdout)["checksums"] is True, verify.stderr[-2000:]
    return done


def test_kill_9_inside_a_chunk_write_then_the_same_command_ends_byte_identical(setup):
    cfg_path, reference, tmp = setup
    out = str(tmp / "killed")
    killed = _run("-c", cfg_path, *SHAPE, "--out", out, inject=("kill", FAULT_AT))
    assert killed.returncode == -9, killed.stderr[-3000:]
    left = _temporaries(out)
    assert len(left) == 1 and left[0].startswith(os.path.join("v0000", ".c000002.prob.npy."))  # half-written
    assert os.path.getsize(os.path.join(out, left[0])) > 0
    assert store.chunk_done(out, 0, 1) and not store.chunk_done(out, 0, 2)
    assert os.path.isfile(store.chunk_paths(out, 0, 2)[0]) and not os.path.exists(os.path.join(out, "manifest.json"))
    done = _resume_equals_reference(cfg_path, out, reference)
    log = done.stdout + done.stderr
    assert "taking over the lock left by pid" in log
    assert "removed 1 temporary file(s) of an interrupted write of view 0 chunk 2" in log


def test_a_full_disk_inside_a_chunk_write_is_one_error_keeps_earlier_chunks_and_a_rerun_finishes(setup):
    cfg_path, reference, tmp = setup
    out = str(tmp / "full")
    full = _run("-c", cfg_path, *SHAPE, "--out", out, inject=("enospc", FAULT_AT))
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-3000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    target = store.chunk_paths(out, 0, 2)[1]
    assert errors == [f"error: cannot write {target}: No space left on device; nothing was replaced (an existing "
                      f"c000002.prob.npy is unchanged). Free disk space or choose a writable folder"]
    assert _temporaries(out) == []  # the failed write's temporary is removed
    with open(os.path.join(out, PLAN), encoding="utf-8") as handle:
        plan = json.load(handle)
    reference_files = _contents(reference)
    for chunk in (0, 1):  # the chunks written before the disk filled are whole and right
        assert damaged_chunk(out, 0, chunk, plan) is None
        for path in store.chunk_paths(out, 0, chunk):
            with open(path, "rb") as handle:
                assert handle.read() == reference_files[os.path.relpath(path, out)]
    assert not store.chunk_done(out, 0, 2) and not os.path.exists(os.path.join(out, "manifest.json"))
    with open(os.path.join(out, LOCK_NAME), encoding="utf-8") as handle:
        assert handle.read() == ""  # the lock was let go: the re-run takes it without a warning
    done = _resume_equals_reference(cfg_path, out, reference)
    assert "taking over the lock" not in done.stdout + done.stderr
