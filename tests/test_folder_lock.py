"""One writer per folder: a second run is refused naming the holder; a lock left by a killed run is taken
over with a log line; ranks of one distributed job share the lock; training, cache generation and mining
all take it."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from ppssld.utils.errors import OutputError
from ppssld.utils.folder_lock import LOCK_NAME, holding, lock_folder
from tests.conftest import ROOT, distill_config, save_random_backbone, write_images

HOLD = ("import sys, time\nsys.path.insert(0, {root!r})\nfrom ppssld.utils.folder_lock import lock_folder\n"
        "lock_folder({folder!r}, 'test folder')\nprint('held', flush=True)\ntime.sleep(600)\n")


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", **extra)
    env.pop("PPSSLD_DEBUG", None)
    return env


def _holder(folder):
    """A process that takes the folder's lock and sleeps; returned once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=ROOT, folder=str(folder))],
                            stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = _holder(tmp_path / "f")
    try:
        with pytest.raises(OutputError) as info:
            lock_folder(str(tmp_path / "f"), "test folder")
        text = str(info.value)
        assert f"test folder {tmp_path / 'f'} is in use by another run: pid {holder.pid} on host " \
               f"{socket.gethostname()}, started 20" in text
        assert "wait for it to finish, or choose another folder" in text
    finally:
        _kill(holder)


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_log_line(tmp_path, caplog):
    holder = _holder(tmp_path / "f")
    _kill(holder)  # kill -9: no clean-up ran, its record is still in the file
    record = json.loads(open(tmp_path / "f" / LOCK_NAME, encoding="utf-8").read())
    assert record["pid"] == holder.pid
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.WARNING, logger="ppssld"):
        lock = lock_folder(str(tmp_path / "f"), "test folder")
    try:
        assert f"taking over the lock left by pid {holder.pid} on host {socket.gethostname()}" in caplog.text
        assert "no longer running" in caplog.text
        assert json.loads(open(tmp_path / "f" / LOCK_NAME, encoding="utf-8").read())["pid"] == os.getpid()
    finally:
        lock.release()
    assert open(tmp_path / "f" / LOCK_NAME, encoding="utf-8").read() == ""  # a clean end leaves no record


def test_a_full_disk_when_writing_the_lock_record_is_one_output_error_and_leaves_the_lock_free(tmp_path,
                                                                                               monkeypatch):
    """ENOSPC on the record's write (found with a full tmpfs: it was a raw OSError traceback)."""
    import errno

    def full(*_args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OutputError) as info:
        lock_folder(str(tmp_path / "f"), "test folder")
    assert str(info.value) == (f"test folder {tmp_path / 'f'}: cannot write its lock file {tmp_path / 'f' / LOCK_NAME} "
                               f"(No space left on device); free disk space or choose a writable folder")
    monkeypatch.setattr(os, "pwrite", real)
    lock = lock_folder(str(tmp_path / "f"), "test folder")  # the failed attempt let go of its flock
    lock.release()


def test_another_hosts_record_is_refused_with_the_file_to_delete(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(OutputError, match=rf"locked by a run on another host: pid 1 on host elsewhere.*delete "
                                          rf"{folder / LOCK_NAME}"):
        lock_folder(str(folder), "test folder")


def test_reentrant_in_one_process_and_ranks_above_0_do_not_contend(tmp_path, monkeypatch):
    first = lock_folder(str(tmp_path / "f"), "test folder")
    again = lock_folder(str(tmp_path / "f"), "test folder")
    assert again is first and first.count == 2
    again.release()
    assert first.count == 1 and json.loads(open(tmp_path / "f" / LOCK_NAME).read())["pid"] == os.getpid()
    first.release()
    holder = _holder(tmp_path / "g")
    try:
        monkeypatch.setenv("PADDLE_TRAINER_ID", "1")  # rank 1 of the job whose rank 0 holds the lock
        assert lock_folder(str(tmp_path / "g"), "test folder") is None
        with holding(str(tmp_path / "g"), "test folder"):
            pass
    finally:
        _kill(holder)


@pytest.fixture
def project(tmp_path):
    root = str(tmp_path / "data")
    paths = write_images(root, 24, 4, unlabeled=8)
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"), class_num=4)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=200)
    cfg["Global"]["eval_during_train"] = False
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path), tmp_path


def _tool(script, *args, **kw):
    return [sys.executable, os.path.join(ROOT, "tools", script), *args]


@pytest.mark.timeout(400)
def test_two_train_runs_in_one_folder_the_second_refuses_then_a_killed_ones_lock_is_taken_over(project):
    path, tmp = project
    lock_file = tmp / "out" / "DistillationModel" / LOCK_NAME
    first = subprocess.Popen(_tool("train.py", "-c", path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=_env())
    try:
        deadline = time.time() + 200
        while not (lock_file.is_file() and lock_file.read_text().strip()):
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.5)
        second = subprocess.run(_tool("train.py", "-c", path, "-o", "Global.epochs=1"), capture_output=True,
                                text=True, env=_env(), timeout=200)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, second.stderr[-3000:]
        assert (f"the checkpoint folder (Global.output_dir/Arch.name) {tmp / 'out' / 'DistillationModel'} is in use "
                f"by another run: pid {first.pid} on host {socket.gethostname()}, started ") in errors[0]
        assert first.poll() is None  # the first run goes on, untouched
    finally:
        _kill(first)
    third = subprocess.run(_tool("train.py", "-c", path, "-o", "Global.epochs=1"), capture_output=True, text=True,
                           env=_env(), timeout=200)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"taking over the lock left by pid {first.pid}" in third.stderr + open(
        tmp / "out" / "train.log", encoding="utf-8").read()
    assert lock_file.read_text() == ""


@pytest.mark.timeout(300)
def test_cache_generation_and_mining_refuse_a_held_out_folder(project, tmp_path):
    path, tmp = project
    held = str(tmp_path / "held")
    holder = _holder(held)
    try:
        cache = subprocess.run(_tool("cache_soft_labels.py", "-c", path, "--views", "1", "--topk", "2", "--out",
                                     held), capture_output=True, text=True, env=_env(), timeout=200)
        mining = subprocess.run(_tool("select_unlabeled.py", "-c", path, "--pool", str(tmp / "data"),
                                      "--eval-list", str(tmp / "data" / "val_list.txt"), "--k", "1", "--out", held),
                                capture_output=True, text=True, env=_env(), timeout=200)
    finally:
        _kill(holder)
    for proc, what in ((cache, "the soft-label cache folder (--out)"), (mining, "--out")):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert f"error: {what} {held} is in use by another run: pid {holder.pid} on host" in proc.stderr
    assert not os.path.exists(os.path.join(held, "plan.json")) and not os.path.exists(os.path.join(held, "scores"))


@pytest.mark.timeout(400)
def test_two_ranks_of_one_launch_do_not_refuse_themselves(project):
    path, tmp = project
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(tmp / "log"), os.path.join(ROOT, "tools", "train.py"), "-c", path, "-o", "Global.epochs=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(PYTHONPATH=ROOT), timeout=360, cwd=str(tmp))
    logs = "".join(open(os.path.join(tmp, "log", n), errors="replace").read() for n in sorted(os.listdir(tmp / "log")))
    assert proc.returncode == 0, proc.stderr[-2000:] + logs[-4000:]
    assert "in use by another run" not in logs
    assert (tmp / "out" / "DistillationModel" / "latest.pdparams").is_file()
    assert (tmp / "out" / "DistillationModel" / LOCK_NAME).read_text() == ""  # rank 0 took it and let go
