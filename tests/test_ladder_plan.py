"""The classic ladder's plan (benchmark/ladder/budget.py; no data, no training): every distillation arm reads a
cache with enough views, --no-cache and the --online-check twins train online, --only pulls in what a step needs, --converge doubles."""
import math
import os

import pytest

from benchmark.ladder import classic as ladder
from benchmark.ladder.budget import DISTILL, Plan

CACHE_KEY = "Global.soft_label_cache="


def _ladder(tmp_path, *extra: str) -> "ladder.Ladder":
    lad = ladder.Ladder(ladder.parse_args(["--work", str(tmp_path), *extra]))
    lad.data = lad.paths()
    lad.teacher = str(tmp_path / "teacher.pdparams")
    lad.mined = str(tmp_path / "mined.txt")
    return lad


def _overrides(lad: "ladder.Ladder", spec) -> list:
    return lad.spec_config(spec, 0.1)[1]


def test_every_distill_arm_reads_one_cache_per_list_and_seed_with_a_view_per_epoch(tmp_path):
    lad = _ladder(tmp_path, "--tune", "--online-check")
    runs, caches = lad.plan.runs()
    readers = [r for r in runs if r.loss in DISTILL and not r.online_twin]
    # steps 2, 3 (x2 seeds), 4, 5 (x2), 6 (x2) and the KD/JS LR search (3 LRs each)
    assert len(readers) == 8 + 6
    assert {r.key for r in readers} == {"kd_L", "js_L", "js_long", "js_mined", "finetune", "tune"}
    for run in readers:
        assert run.cache in caches, run.label
        cache = caches[run.cache]
        assert cache.views >= run.epochs, (run.label, cache.views, run.epochs)  # no view reused
        assert cache.seed == run.seed and cache.lists == run.data, run.label
        assert run.label in cache.readers
        ov = _overrides(lad, run)
        assert [o for o in ov if o.startswith(CACHE_KEY)] == [CACHE_KEY + lad.cache_path(run.cache)], run.label
    # ONE cache per (list, seed): step 4's 15 epochs size the L/seed-1 cache that steps 2, 3 and 6 also read
    assert sorted(caches) == ["C_cache_L_mined_seed1", "C_cache_L_mined_seed2", "C_cache_L_seed1",
                              "C_cache_L_seed2", "C_cache_tune_seed1"]
    assert caches["C_cache_L_seed1"].views == lad.plan.epochs(ladder.STEPS["js_long"]) == 15
    assert all(c.topk == 5 for c in caches.values())
    assert len({lad.cache_path(k) for k in caches}) == len(caches)
    # the online twins of steps 3 and 5, both seeds, read no cache
    twins = [r for r in runs if r.online_twin]
    assert sorted((r.key, r.seed) for r in twins) == [("js_L", 1), ("js_L", 2), ("js_mined", 1), ("js_mined", 2)]
    for run in twins + [r for r in runs if r.loss == "ce"]:
        assert run.cache is None and not any(o.startswith(CACHE_KEY) for o in _overrides(lad, run)), run.label
    # the cache is a unit of the schedule, placed before its first reader
    labels = [u for u, _ in lad.plan.units()]
    for name, cache in caches.items():
        assert labels.count(name) == 1 and all(labels.index(name) < labels.index(r) for r in cache.readers)


def test_no_cache_plans_every_arm_online(tmp_path):
    lad = _ladder(tmp_path, "--no-cache", "--tune")
    runs, caches = lad.plan.runs()
    assert caches == {}
    assert any(r.loss in DISTILL for r in runs)
    for run in runs:
        if run.loss in ("teacher",) or run.key == "transfer":
            continue
        assert run.cache is None and not any(o.startswith(CACHE_KEY) for o in _overrides(lad, run)), run.label
    cached = sum(s for _, s in _ladder(tmp_path, "--tune").plan.units())
    assert cached < sum(s for _, s in lad.plan.units())  # the cost model: the cache saves time overall


def test_the_ladder_distill_configs_pass_the_cache_rules_and_a_refused_one_is_named(tmp_path):
    lad = _ladder(tmp_path)
    runs, _ = lad.plan.runs()
    for key in ("kd_L", "js_L", "finetune"):
        run = next(r for r in runs if r.key == key)
        assert lad.cache_refusal(*lad.spec_config(run, 0.1)) is None, key
    yaml_path, ov = lad.spec_config(next(r for r in runs if r.key == "js_L"), 0.1)
    why = lad.cache_refusal(yaml_path, ov + ["Arch.teacher_bn_mode=train"])
    assert why and "teacher_bn_mode" in why


def test_only_adds_what_a_step_needs_and_refuses_unknown_keys(tmp_path, capsys):
    plan = _ladder(tmp_path, "--only", "js_L,js_mined", "--online-check").plan
    assert plan.keys() == ["teacher", "js_L", "mine", "js_mined"]
    assert sorted({r.key for r in plan.runs()[0]}) == ["js_L", "js_mined", "teacher"]
    assert _ladder(tmp_path, "--only", "transfer").plan.keys() == ["teacher", "ce_L", "mine", "js_mined", "finetune",
                                                                   "transfer"]
    for bad in (["--only", "js_L,nope"], ["--online-check", "--no-cache"], ["--cache-topk", "11"]):
        with pytest.raises(SystemExit) as exc:
            ladder.parse_args(bad)
        assert exc.value.code == 2, bad
    assert "nope" in capsys.readouterr().err


def test_converge_doubles_the_budgets_of_steps_0_and_1_within_the_cap(tmp_path):
    plain = Plan(ladder.parse_args([]))
    plan = Plan(ladder.parse_args(["--converge", "--converge-cap-min", "40"]))
    for key in ("ce_full", "ce_L"):
        budgets = plan.converge_budgets(key)
        base = plain.epochs(ladder.STEPS[key])
        assert budgets == [base * 2 ** i for i in range(len(budgets))] and len(budgets) >= 2, budgets
        worst = sum(plan.run_s(key, e) for e in budgets) * len(plan.step_seeds(key))
        assert worst <= 40 * 60 < worst + plan.run_s(key, 2 * budgets[-1]) * len(plan.step_seeds(key))
        labels = [r.label for r in plan.runs()[0] if r.key == key]
        assert labels[0].endswith(f"_ep{base}") and len(labels) == len(budgets) * len(plan.step_seeds(key))
    assert plain.converge_budgets("js_L") == [plain.epochs(ladder.STEPS["js_L"])]
    table = plan.table()
    assert "--converge: worst case" in table
    assert float(table.split("included):")[1].split("min")[0]) > float(
        plain.table().split("included):")[1].split("min")[0])


def _fake_converge(tmp_path, monkeypatch, top1_by_epochs, speed=1.0, cap="45"):
    """Run Ladder.converge('ce_full') with run_step faked: top-1 = ``top1_by_epochs(E)``, wall = cost model x speed."""
    lad = _ladder(tmp_path, "--converge", "--converge-cap-min", cap)
    trained = []

    def fake_run_step(key, seed, epochs):
        trained.append(epochs)
        return {"top1": top1_by_epochs(epochs), "wall_s": speed * lad.plan.run_s(key, epochs)}

    monkeypatch.setattr(lad, "run_step", fake_run_step)
    lad.converge("ce_full")
    return lad.converged["ce_full"], trained


def test_converge_stops_at_a_plateau_or_at_the_cap_and_says_which(tmp_path, monkeypatch):
    base = Plan(ladder.parse_args([])).epochs(ladder.STEPS["ce_full"])
    # a doubling that gains < 0.5 points stops it: a plateau, the best mean chosen
    conv, trained = _fake_converge(tmp_path, monkeypatch, {base: 0.70, 2 * base: 0.75, 4 * base: 0.753}.get,
                                   speed=0.01)
    assert trained == [base, 2 * base, 4 * base] and conv["plateaued"] and conv["chosen"] == 4 * base
    assert conv["stop"].startswith("plateau: ") and "+0.30 < 0.5 points" in conv["stop"]
    # still rising when the next budget would pass the cap: stopped by the cap, and the report says so
    plan = Plan(ladder.parse_args(["--converge"]))
    speed = 20.0 / plan.run_s("ce_full", base)   # the first budget takes 20 s: 20 + 40 + 80 s fit 3 min, 160 not
    conv, trained = _fake_converge(tmp_path, monkeypatch, lambda e: 0.6 + 0.05 * math.log2(e / base),
                                   speed=speed, cap="3")
    assert trained == [base, 2 * base, 4 * base] and not conv["plateaued"] and conv["chosen"] == 4 * base
    assert conv["stop"].startswith("cap, not converged: ") and "still rising (+" in conv["stop"]


def test_check_seeds_trains_steps_3_and_5_that_many_seeds_both_ways(tmp_path, capsys):
    lad = _ladder(tmp_path, "--online-check", "--seeds", "1,2,3", "--check-seeds", "3", "--only", "js_L,js_mined")
    runs, _caches = lad.plan.runs()
    for key in ("js_L", "js_mined"):
        cached = sorted(r.seed for r in runs if r.key == key and not r.online_twin)
        online = sorted(r.seed for r in runs if r.key == key and r.online_twin)
        assert cached == online == [1, 2, 3], (key, cached, online)
    with pytest.raises(SystemExit) as exc:
        ladder.parse_args(["--online-check", "--seeds", "1,2", "--check-seeds", "3"])
    assert exc.value.code == 2 and "--check-seeds" in capsys.readouterr().err


def test_the_eta_ignores_skipped_units_and_scales_by_the_timed_ones(tmp_path, caplog):
    """A resumed ladder finds its data prepared and its finished units done: none of them is timed, so none may
    drag the ETA's speed ratio to 0 (it printed '~0 min left (budget x0.00)' with an hour to go)."""
    lad = _ladder(tmp_path)
    for which in ("student", "full", "transfer"):   # data from an earlier invocation
        os.makedirs(tmp_path / "data" / which)
        (tmp_path / "data" / which / "prepare_summary.json").write_text("{}")
        (tmp_path / "data" / which / "train_list.txt").write_text("".join(f"a{i}.png {i % 2}\n" for i in range(10)))
    labels = [u for u, _ in lad.units]
    with caplog.at_level("INFO", logger="ppssld.benchmark.ladder"):
        lad.prepare()
        lad.progress(labels[1], lad.units[1][1], None)   # a finished unit, skipped
    assert "budget x0" not in caplog.text and "cost model, nothing timed yet" in caplog.text
    assert f"~{sum(s for _, s in lad.units[2:]) / 60:.0f} min left" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="ppssld.benchmark.ladder"):
        lad.progress(labels[2], lad.units[2][1], 0.5 * lad.units[2][1])   # ran at twice the modelled speed
    assert "budget x0.50" in caplog.text
    assert f"~{sum(s for _, s in lad.units[3:]) * 0.5 / 60:.0f} min left" in caplog.text


def test_a_converge_budget_past_the_plans_worst_case_still_gets_a_run(tmp_path):
    """The plan lists the budgets the cost model expects to fit the cap; the runner decides by the speed it sees
    and may go one doubling further (step 1 at 32 epochs crashed the 2026-11-26 ladder with StopIteration)."""
    lad = _ladder(tmp_path, "--converge", "--converge-cap-min", "1")
    planned = [r.epochs for r in lad.plan.runs()[0] if r.key == "ce_L"]
    far = 4 * max(planned)
    for seed in lad.plan.step_seeds("ce_L"):   # each seed its own: the first fix trained seed 2 with seed 1
        spec = lad.spec(lad.plan.label("ce_L", seed, far), "ce_L", seed, far)
        assert spec.epochs == far and spec.key == "ce_L" and spec.cache is None and spec.seed == seed
        assert spec.label.endswith(f"seed{seed}_ep{far}") and spec.est_s == lad.plan.run_s("ce_L", far) > 0
    assert len(lad.plan.step_seeds("ce_L")) == 2
    with pytest.raises(KeyError, match="not a run of the ladder's plan"):
        lad.spec("3_js_L_seed9")
