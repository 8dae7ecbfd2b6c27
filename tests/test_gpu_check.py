"""benchmark/gpu/gpu_check.sh --dry-run on the CPU: every step builds, nothing is measured (issue 15 point 6)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = os.path.join(ROOT, "benchmark", "gpu", "gpu_check.sh")
CACHE_ARMS = [f"train/cache_distillation/{p}" for p in ("fp32", "amp_O1", "amp_O2")]


def _run(args, tmp_path, timeout):
    env = dict(os.environ, PYTHON=sys.executable, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=str(tmp_path))


@pytest.mark.timeout(120)
def test_dry_run_builds_every_step_and_measures_nothing(tmp_path):
    proc = _run(["--dry-run", "--work", str(tmp_path / "work"), "--results-dir", str(tmp_path / "res")], tmp_path, 110)
    assert "DRY RUN on the CPU: nothing was measured" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "res" / "gpu_check_dry_run.json").read_text())
    assert report["dry_run"] is True and report["measured"] is False
    assert (tmp_path / "res" / "gpu_check_dry_run.md").read_text().count("nothing was measured") == 1
    rows = {r["step"]: r for r in report["steps"]}
    expected = {"data", "cache_generation"} | {f"train/{a}/{p}" for a in ("online_distillation", "cache_distillation",
                                                                          "student_ce")
                                               for p in ("fp32", "amp_O1", "amp_O2")}
    expected |= {"parity/student_ce/amp_O1", "parity/student_ce/amp_O2"}
    expected |= {f"predictor/amp_O2/{v}" for v in ("gpu", "trt_fp32", "trt_fp16")}
    assert set(rows) == expected
    for step, item in rows.items():  # nothing timed: no figure besides the step, its status and what it did
        assert set(item) == {"step", "status", "detail"}, item
    cache_steps = {"cache_generation", *CACHE_ARMS}
    for step in expected - cache_steps:
        assert rows[step]["status"] == "ok", rows[step]
    exported = tmp_path / "work" / "export" / "amp_O2"
    assert any(p.name.endswith("_infer") and (p / "inference.pdiparams").is_file() for p in exported.iterdir())
    if os.path.isfile(os.path.join(ROOT, "tools", "cache_soft_labels.py")):
        assert all(rows[s]["status"] == "ok" for s in cache_steps), [rows[s] for s in cache_steps]
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:  # not skipped: reported as failing until the soft-label cache tool is in the tree
        assert rows["cache_generation"]["status"] == "FAILED"
        assert "tools/cache_soft_labels.py is missing" in rows["cache_generation"]["detail"]
        assert all(rows[s]["status"] == "FAILED" for s in CACHE_ARMS)
        assert proc.returncode == 1


def _gpu_visible() -> bool:
    import paddle

    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


@pytest.mark.skipif(_gpu_visible(), reason="a GPU is visible: the real run would start (it is not a CPU test)")
@pytest.mark.timeout(60)
def test_without_a_gpu_the_real_run_refuses_with_exit_2(tmp_path):
    proc = _run(["--work", str(tmp_path / "w"), "--results-dir", str(tmp_path / "res")], tmp_path, 55)
    assert proc.returncode == 2 and "no GPU visible to Paddle" in proc.stderr and "--dry-run" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "res").exists()


def test_bad_argument_exits_2(tmp_path):
    proc = _run(["--dry-run", "--epochs", "0"], tmp_path, 55)
    assert proc.returncode == 2 and "--epochs must be >= 1" in proc.stderr and "Traceback" not in proc.stderr
