"""The classic ladder (python -m benchmark.ladder) in smoke mode on the scikit-learn digits: every rung runs, then a re-run skips them."""
import json
import time
import os
import subprocess
import sys
from typing import List

from tests.conftest import ROOT

LADDER = [sys.executable, "-m", "benchmark.ladder"]
ENV = dict(os.environ, PYTHONPATH=ROOT)  # -m benchmark.ladder from any folder
SMOKE = ["--dataset", "digits", "--scale", "0.01", "--limit-train", "64", "--limit-val", "32", "--batch-size", "16",
         "--workers", "0", "--k", "3"]
RUNS = 13  # teacher, 0, 1 x2, 2, 3, 4, 5 x2, 6 x2, transfer x2 (mining is logged apart)
CACHES = 4  # soft-label caches: L seed 1 (steps 2, 3, 4, 6), L seed 2 (6), L+mined seeds 1 and 2 (5)


def _run(tmp_path, extra: List[str]) -> subprocess.CompletedProcess:
    cmd = LADDER + ["--work", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    proc = subprocess.run(cmd + SMOKE + extra, capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
                          env=ENV)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_ladder_smoke_runs_every_step_then_skips_finished_runs(tmp_path):
    tic = time.monotonic()
    first = _run(tmp_path, [])
    elapsed = time.monotonic() - tic
    results = tmp_path / "results"
    payload = json.loads((results / "ladder.json").read_text())
    for key in ("command", "machine", "date", "teacher_top1", "steps", "transfer"):
        assert key in payload, key
    seeds = {}
    for step in payload["steps"]:
        assert set(step) >= {"step", "name", "seed", "epochs", "images_seen", "wall_s", "top1"}
        assert 0.0 <= step["top1"] <= 1.0 and step["images_seen"] > 0 and step["epochs"] >= 1
        seeds.setdefault(step["step"], set()).add(step["seed"])
    assert sorted(seeds) == list(range(7))
    for step in (1, 5, 6):
        assert seeds[step] == {1, 2}, (step, seeds[step])
    for key in ("baseline_step1", "ssld_step6"):
        assert 0.0 <= payload["transfer"][key]["top1"] <= 1.0
        assert payload["transfer"][key]["lr_mult_list"] == [0.25, 0.25, 0.5, 0.5, 0.75]
        assert payload["transfer"][key]["lr_mult_list_applied"] is True  # by ppssld: MobileNetV3 drops it
    # the wall times are measured, not invented: every step's own time is its run's entry, and all runs of this
    # first invocation together took less than the invocation itself (and most of it)
    runs = list(payload["wall_s_by_run"].values())
    assert all(s["wall_s"] > 0 and any(abs(s["wall_s"] - v) < 0.05 for v in runs) for s in payload["steps"])
    assert 0.3 * elapsed < payload["total_wall_s"] <= payload["invocation_wall_s"] + 0.5 <= elapsed + 0.5
    parts = payload["wall_by_part"]   # the breakdown covers every run once
    assert sum(v["units"] for v in parts.values()) == len(runs)
    assert abs(sum(v["wall_s"] for v in parts.values()) - payload["total_wall_s"]) < 0.05 * len(runs)
    assert parts["soft-label caches"]["units"] == 4 and parts["teacher training"]["units"] == 1
    assert "| soft-label caches | 4 |" in (results / "ladder.md").read_text()
    assert payload["settings"]["js_weight"] == 4.0 and payload["settings"]["lr"]
    assert (results / "ladder.png").stat().st_size > 1000
    assert "| step | name | seed | teacher | images seen |" in (results / "ladder.md").read_text()
    assert first.stdout.count("finished earlier, skipped") == 0
    # distillation arms read the soft-label caches, each generated once and timed in the wall total
    assert sorted(payload["caches"]) == ["C_cache_L_mined_seed1", "C_cache_L_mined_seed2", "C_cache_L_seed1",
                                         "C_cache_L_seed2"]
    for label, cache in payload["caches"].items():
        assert cache["topk"] == 5 and cache["dtype"] == "float16" and cache["images"] > 0
        assert payload["wall_s_by_run"][label] == cache["wall_s"] > 0
        assert first.stdout.count(f"{label}: generating") == 1
    assert {s["step"]: s["teacher"] for s in payload["steps"] if s["step"] >= 2} == {2: "cache", 3: "cache", 4: "cache",
                                                                                     5: "cache", 6: "cache"}
    assert first.stdout.count("is read from the cache") == 7 and payload["cache_refused"] == {}

    # A re-run skips everything; a run whose result.json was lost resumes from its last checkpoint.
    lost = next((tmp_path / "work" / "runs").glob("6_finetune_seed2_*")) / "result.json"
    lost.unlink()
    second = _run(tmp_path, [])
    assert second.stdout.count("finished earlier, skipped") == RUNS - 1 + 1 + CACHES, second.stdout[-3000:]
    assert "generating" not in second.stdout
    assert "6_finetune_seed2: resuming the interrupted run" in second.stdout
    again = json.loads((results / "ladder.json").read_text())
    assert [(s["step"], s["seed"], s["top1"]) for s in again["steps"]] == \
        [(s["step"], s["seed"], s["top1"]) for s in payload["steps"]]
    # the total counts every run's own wall time, also of runs an earlier invocation did
    assert {k: v for k, v in again["wall_s_by_run"].items() if k != "6_finetune_seed2"} == \
        {k: v for k, v in payload["wall_s_by_run"].items() if k != "6_finetune_seed2"}


def test_plan_prints_the_budget_table_and_total():
    proc = subprocess.run(LADDER + ["--plan"], capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| T | teacher |" in proc.stdout and "| 5 | js_mined |" in proc.stdout
    total = float(proc.stdout.split("included):")[1].split("min")[0])
    assert 60 <= total <= 125, total
