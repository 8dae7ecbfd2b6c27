"""Every CLI: a user's mistake gives one ``error: <message>`` line and exit status 2, no traceback;
``--debug`` / ``PPSSLD_DEBUG=1`` adds the traceback; an unexpected exception keeps its traceback."""
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, distill_config, save_random_backbone, write_images

MISSING = "/nonexistent/config.yaml"


def _cmd(script, *args):
    return [sys.executable, os.path.join(ROOT, *script.split("/"))] + list(args)


def _run_all(commands, env_extra=None):
    """Run the commands concurrently (they mostly wait on imports); return their CompletedProcess-like results."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    env.pop("PPSSLD_DEBUG", None)
    procs = {}
    for name, (cmd, extra) in commands.items():
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env=dict(env, **(extra or {})))
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        results[name] = (proc.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def corrupt_project(tmp_path_factory):
    """A tiny distillation config whose training list names a corrupt image on line 3."""
    root = str(tmp_path_factory.mktemp("cli"))
    paths = write_images(os.path.join(root, "data"), 8, 4)
    with open(os.path.join(root, "data", "images", "00002.png"), "wb") as handle:
        handle.write(b"not a png")
    teacher = save_random_backbone(os.path.join(root, "teacher.pdparams"))
    configs = {}
    for workers in (0, 2):
        cfg = distill_config(os.path.join(root, "data"), paths, teacher, os.path.join(root, f"out{workers}"),
                             with_unlabeled=False)
        cfg["DataLoader"]["Train"]["loader"]["num_workers"] = workers
        configs[workers] = os.path.join(root, f"cfg{workers}.yaml")
        with open(configs[workers], "w", encoding="utf-8") as handle:
            yaml.safe_dump(cfg, handle)
    return root, configs


@pytest.mark.timeout(300)
def test_every_tool_turns_a_user_error_into_one_line_and_status_2(tmp_path, corrupt_project):
    root, configs = corrupt_project
    cases = {
        "train": (_cmd("tools/train.py", "-c", MISSING), "config file '/nonexistent/config.yaml' does not exist"),
        "eval": (_cmd("tools/eval.py", "-c", MISSING), "does not exist"),
        "export_model": (_cmd("tools/export_model.py", "-c", MISSING), "does not exist"),
        "select_unlabeled": (_cmd("tools/select_unlabeled.py", "-c", MISSING, "--pool", "p", "--eval-list", "e",
                                  "--k", "1", "--out", str(tmp_path / "m")), "does not exist"),
        "ssld_pipeline": (_cmd("tools/ssld_pipeline.py", "-c", MISSING), "does not exist"),
        "check_data": (_cmd("tools/check_data.py", "-c", MISSING), "does not exist"),
        "prepare_data": (_cmd("tools/prepare_data.py", "--dataset", "cifar10", "--out", str(tmp_path / "d")),
                         "--src"),
        "export_hub_module": (_cmd("tools/export_hub_module.py", "--model_dir", "/nonexistent/x_infer", "--name",
                                   "m", "--out", str(tmp_path / "hub")), "/nonexistent/x_infer"),
        "predict_cls": (_cmd("deploy/python/predict_cls.py", "--model_dir", "/nonexistent/x_infer", "--image",
                             "x.png"), "/nonexistent/x_infer"),
        # a DataError raised while training reads a batch, in this process and in loader workers
        "train_corrupt_w0": (_cmd("tools/train.py", "-c", configs[0]), "00002.png (listed at"),
        "train_corrupt_w2": (_cmd("tools/train.py", "-c", configs[2]), "00002.png (listed at"),
        # an output folder that cannot be created (under a regular file: root ignores chmod)
        "train_unwritable": (_cmd("tools/train.py", "-c", configs[0], "-o",
                                  f"Global.output_dir={os.path.join(root, 'cfg0.yaml', 'out')}"),
                             "cannot write the log file"),
    }
    commands = {name: (cmd, None) for name, (cmd, _) in cases.items()}
    commands["train_debug_flag"] = (_cmd("tools/train.py", "-c", MISSING, "--debug"), None)
    commands["predict_debug_env"] = (cases["predict_cls"][0], {"PPSSLD_DEBUG": "1"})
    commands["check_data_debug_env"] = (cases["check_data"][0], {"PPSSLD_DEBUG": "1"})
    results = _run_all(commands)
    for name, (_, needle) in cases.items():
        code, out, err = results[name]
        assert code == 2, f"{name}: status {code}\n{err[-3000:]}"
        assert "Traceback" not in err + out, f"{name}: traceback shown\n{err[-3000:]}"
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and needle in err[err.index("error: "):], f"{name}: {err[-3000:]}"
    assert "train.txt:3" in results["train_corrupt_w0"][2] or "list.txt:3" in results["train_corrupt_w0"][2]
    assert results["train_corrupt_w0"][2].split("error: ")[1] == results["train_corrupt_w2"][2].split("error: ")[1] \
        .replace("out2", "out0")
    log = open(os.path.join(root, "out0", "train.log"), encoding="utf-8").read()
    assert "ERROR" in log and "00002.png (listed at" in log  # the run's log records why it stopped
    for name in ("train_debug_flag", "predict_debug_env", "check_data_debug_env"):
        code, _, err = results[name]
        assert code == 2 and "Traceback (most recent call last)" in err and "\nerror: " in err, f"{name}: {err[-2000:]}"


def test_unexpected_exceptions_keep_their_traceback(monkeypatch, capsys):
    from ppssld.utils import cli

    def bug():
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(sys, "argv", ["tool"])
    with pytest.raises(KeyError):
        cli.run(bug)

    def user_error():
        from ppssld.utils.errors import DataError

        raise DataError("list.txt:3: label 'x' is not an integer")

    with pytest.raises(SystemExit) as info:
        cli.run(user_error)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: list.txt:3: label 'x' is not an integer\n"
