"""README promises checked through the real entry points: Trainer.fit, build_trainer, the package import."""
import logging
import os

import numpy as np
import paddle
import pytest

from ppssld.engine.builder import build_trainer
from ppssld.engine.trainer import TrainingDivergedError
from ppssld.utils import threads
from ppssld.utils.errors import WeightsError
from tests.conftest import ROOT, distill_config, save_random_backbone


@pytest.fixture
def setup(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4)
    return root, paths, teacher, tmp_path


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_teacher_stays_bit_identical_through_fit(setup, bn_mode):
    root, paths, teacher, tmp = setup
    trainer = build_trainer(distill_config(root, paths, teacher, str(tmp / "out"), epochs=2, bn_mode=bn_mode))
    on_disk = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in paddle.load(teacher).items()}
    student_before = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items() if k.startswith("Student.")}
    trainer.fit()
    after = {k[len("Teacher."):]: v.numpy() for k, v in trainer.model.state_dict().items() if k.startswith("Teacher.")}
    assert after.keys() == on_disk.keys() and any("_mean" in k or "_variance" in k for k in after)
    for key, value in on_disk.items():
        assert np.array_equal(after[key], value), key  # weights and BN running statistics, bit for bit
    saved = paddle.load(str(tmp / "out" / "DistillationModel" / "latest.pdparams"))
    for key, value in on_disk.items():
        assert np.array_equal(saved[f"Teacher.{key}"].numpy(), value), key
    assert any(not np.array_equal(v, trainer.model.state_dict()[k].numpy()) for k, v in student_before.items())


def test_inf_loss_stops_training_naming_epoch_and_step(setup):
    root, paths, teacher, tmp = setup
    cfg = distill_config(root, paths, teacher, str(tmp / "inf"), epochs=1)
    cfg["Loss"]["Train"][0]["JSDivLoss"]["weight"] = float("inf")
    with pytest.raises(TrainingDivergedError, match=r"\binf\b.*epoch 1\b.*step 1/4"):
        build_trainer(cfg).fit()


def test_strict_load_false_loads_matching_keys_and_warns(setup, caplog):
    root, paths, teacher, tmp = setup
    donor = build_trainer(distill_config(root, paths, teacher, str(tmp / "donor"), epochs=1)).model
    paddle.seed(123)
    state = {k: paddle.randn(v.shape) if v.dtype == paddle.float32 else v for k, v in donor.state_dict().items()}
    dropped = next(k for k in state if k.startswith("Student.") and k.endswith("weight"))
    state.pop(dropped)
    state["Student.not_a_layer.weight"] = paddle.zeros([2])
    weights = str(tmp / "partial.pdparams")
    paddle.save(state, weights)
    cfg = distill_config(root, paths, teacher, str(tmp / "s"), epochs=1)
    cfg["Global"]["pretrained_model"] = weights
    with pytest.raises(WeightsError, match=rf"missing {dropped}.*unexpected Student.not_a_layer.weight"):
        build_trainer(cfg)
    cfg["Global"]["strict_load"] = False
    logging.getLogger("ppssld").propagate = True
    with caplog.at_level(logging.WARNING, logger="ppssld"):
        model = build_trainer(cfg).model
    assert f"missing {dropped}" in caplog.text and "unexpected Student.not_a_layer.weight" in caplog.text
    loaded = model.state_dict()
    for key, value in state.items():
        if key in loaded:
            assert np.array_equal(loaded[key].numpy(), value.numpy()), key


@pytest.mark.parametrize("user, local, cores, expected, source", [
    (None, None, 2, "2", "ppssld"),      # unset: every core for the single process
    (None, "2", 4, "2", "ppssld"),       # two processes on the node share the cores
    (None, "4", 2, "1", "ppssld"),       # never below one thread
    ("3", None, 2, "3", "user"),         # the user's choice is kept
])
def test_thread_default(monkeypatch, user, local, cores, expected, source):
    for key in ("OMP_NUM_THREADS", "PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM"):
        monkeypatch.delenv(key, raising=False)
    if user:
        monkeypatch.setenv("OMP_NUM_THREADS", user)
    if local:
        monkeypatch.setenv("PADDLE_LOCAL_SIZE", local)
    monkeypatch.setattr(threads, "_CHOSEN", {})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert threads.ensure_cpu_threads() == int(expected)
    assert os.environ["OMP_NUM_THREADS"] == expected and threads.thread_source().startswith(source)


@pytest.mark.parametrize("user, needle", [(None, "paddle.distributed.launch had set 1, not you"), ("1", "user")])
def test_the_thread_line_says_who_set_it_under_the_launcher(tmp_path, user, needle):
    """paddle.distributed.launch's own import of Paddle sets OMP_NUM_THREADS=1 for its workers: not the user."""
    import subprocess
    import sys

    script = tmp_path / "w.py"
    script.write_text("import os, sys\nsys.path.insert(0, %r)\nfrom ppssld.utils import threads\n"
                      "threads.ensure_cpu_threads()\nprint('SOURCE', os.environ['OMP_NUM_THREADS'], "
                      "threads.thread_source())\n" % ROOT)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if user:
        env["OMP_NUM_THREADS"] = user
    subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                    str(tmp_path / "log"), str(script)], env=env, check=True, capture_output=True, timeout=120)
    line = next(x for x in (tmp_path / "log" / "workerlog.0").read_text().splitlines() if x.startswith("SOURCE"))
    assert needle in line, line


@pytest.mark.parametrize("ci, code, needle", [("true", 1, "Fashion-MNIST is missing"), ("", 0, "1 skipped")])
def test_fashion_mnist_tests_fail_in_ci_instead_of_skipping(tmp_path, ci, code, needle):
    import subprocess
    import sys

    from tests.conftest import ROOT

    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    fashion_mnist: needs the data set\n")
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {ROOT!r})\nimport tests.conftest as base\n"
        "base.FASHION_MNIST = '/nonexistent/fashion-mnist'\npytest_runtest_setup = base.pytest_runtest_setup\n")
    (tmp_path / "test_needs_data.py").write_text(
        "import pytest\n\n\n@pytest.mark.fashion_mnist\ndef test_uses_the_data():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = ci
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == code and needle in proc.stdout, proc.stdout[-2000:]
