"""benchmark/ladder/twin.py's arithmetic and errors (the twins themselves train in the benchmark, not here)."""
import json

import pytest

from benchmark.ladder import twin as ladder_twin

LADDER = {"command": "-m benchmark.ladder", "total_wall_s": 1000.0,
          "steps": [{"label": "1_ce_L_seed1", "teacher": "-", "wall_s": 300.0},
                    {"label": "3_js_L_seed1", "teacher": "cache", "wall_s": 100.0},
                    {"label": "5_js_mined_seed1", "teacher": "cache", "wall_s": 200.0},
                    {"label": "5_js_mined_seed2", "teacher": "online", "wall_s": 350.0}],
          "wall_s_by_run": {"1_ce_L_seed1": 300.0, "3_js_L_seed1": 100.0, "5_js_mined_seed1": 200.0,
                            "5_js_mined_seed2": 350.0, "tune_ce_lr0.1": 10.0, "tune_js_lr0.1": 20.0,
                            "C_cache_L_seed1": 15.0, "C_cache_L_mined_seed1": 5.0}}


def test_the_estimate_scales_only_cache_readers_by_their_kinds_ratio_and_drops_the_caches():
    e = ladder_twin.estimate(LADDER, {"js_L": 2.0, "js_mined": 1.5})
    assert e["cache_readers"] == ["3_js_L_seed1", "5_js_mined_seed1", "tune_js_lr0.1"]
    assert e["after_readers_and_caches_s"] == 100 + 200 + 20 + 15 + 5
    assert e["before_estimated_s"] == 100 * 2.0 + 200 * 1.5 + 20 * 2.0
    assert e["ladder_before_estimated_s"] == 1000 - 340 + 540


def test_a_missing_cached_run_is_one_clear_error(tmp_path):
    run = tmp_path / "runs" / "3_js_L_seed1_abc"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"wall_s": 99.0, "soft_label_cache": "/c"}))  # another wall
    with pytest.raises(SystemExit, match="no cached run 3_js_L_seed1 with the wall time"):
        ladder_twin.cached_run(str(tmp_path), "3_js_L_seed1", LADDER)
    (run / "result.json").write_text(json.dumps({"wall_s": 100.0, "soft_label_cache": "/c", "top1": 0.7}))
    assert ladder_twin.cached_run(str(tmp_path), "3_js_L_seed1", LADDER)["top1"] == 0.7
