"""The converged ladder (benchmark/ladder/): the plateau rule on synthetic results, the plan's cost model, an
interrupted search resumed with a fake trainer (finished budgets skipped, the killed run resumed from its
checkpoint), the soft-label cache family's view linking, and ladder.md / ladder.png from a synthetic ladder.json."""
import json
import math
import os

import pytest

from benchmark.ladder import converged, plateau
from benchmark.ladder.arms import EVAL_S, IPS, START_S, Plan
from benchmark.ladder.converged_render import markdown, plot
from benchmark.ladder.converged_runs import ConvergedRuns


# ---- the plateau rule ------------------------------------------------------------------------------------------

def _search(curve, start, cap, threshold=0.5):
    trained = []
    out = plateau.search(lambda e: trained.append(e) or curve(e), start, cap, threshold)
    return out, trained


def test_the_search_stops_at_the_first_flat_doubling_and_chooses_its_larger_budget():
    out, trained = _search({4: 0.60, 8: 0.70, 16: 0.72, 32: 0.723, 64: 0.9}.get, 4, 256)
    assert trained == [4, 8, 16, 32] and out["chosen"] == 32 and out["plateaued"]
    assert [b.get("gain") for b in out["budgets"]] == [None, 10.0, 2.0, 0.3]
    assert out["stop"] == "plateau: 16 -> 32 epochs gained +0.30 < 0.5 points"
    out, trained = _search({4: 0.70, 8: 0.69}.get, 4, 256)  # a drop is a plateau too
    assert trained == [4, 8] and out["chosen"] == 8 and out["plateaued"]
    out, trained = _search({4: 0.700, 8: 0.705, 16: 0.706}.get, 4, 256)  # exactly 0.5 points: not below the rule
    assert trained == [4, 8, 16] and out["chosen"] == 16


def test_the_search_stops_at_the_cap_unplateaued_and_says_so():
    out, trained = _search(lambda e: 0.5 + 0.04 * math.log2(e), 4, 16)
    assert trained == [4, 8, 16] and out["chosen"] == 16 and not out["plateaued"]
    assert out["stop"] == ("cap, not converged: 32 epochs would pass the cap of 16 epochs; still rising (+4.00 at "
                           "the last doubling)")
    out, trained = _search(lambda e: 0.5, 64, 16)  # a start above the cap is clamped to it
    assert trained == [16] and not out["plateaued"] and out["stop"].endswith("no doubling fitted under the cap")
    assert plateau.budgets_up_to(3, 20) == [3, 6, 12] and plateau.budgets_up_to(0, 4) == [1, 2, 4]


def test_the_verdict_needs_the_gain_three_spreads_plateaus_and_two_seeds():
    ref = dict(plateau.stats([0.800, 0.805, 0.795]), plateaued=True)
    assert ref["mean"] == pytest.approx(0.8) and ref["spread"] == pytest.approx(0.01) and ref["n"] == 3
    arm = dict(plateau.stats([0.842, 0.840, 0.838]), plateaued=True)
    v = plateau.verdict(arm, ref)
    assert v == {"gain": 4.0, "largest_spread": 1.0, "ratio": 4.0, "goal_met": True}
    wide = dict(plateau.stats([0.82, 0.86, 0.84]), plateaued=True)  # +4 points but a 4-point spread
    assert plateau.verdict(wide, ref)["ratio"] == 1.0 and not plateau.verdict(wide, ref)["goal_met"]
    assert not plateau.verdict(arm, dict(ref, plateaued=False))["goal_met"]
    assert not plateau.verdict(dict(plateau.stats([0.84]), plateaued=True), ref)["goal_met"]  # one seed
    assert not plateau.verdict(dict(plateau.stats([0.82, 0.82]), plateaued=True), ref)["goal_met"]  # +2 points


# ---- the plan and its cost model -------------------------------------------------------------------------------

def _s(images, epochs, val, kind="ce"):
    return epochs * images / IPS[kind] + EVAL_S["student"] * val / 1e4 + START_S


def test_the_default_plan_fits_six_hours_and_costs_every_part_of_the_protocol():
    plan = Plan(converged.parse_args([]))
    assert [a.key for a in plan.arms] == ["ce_L", "js_mined", "finetune", "ce_oracle", "teacher_weak", "dml", "kl_t4",
                                          "k0", "k300", "kall"]
    totals = plan.totals()
    assert totals["expected"] <= 6 * 3600 < totals["worst"]
    ce = plan.arms[0]
    cost = plan.arm_cost(ce, plan.js_chosen(False), False)  # start 32: tune 4 runs x 16 epochs on 1,600 images
    assert cost["tune"] == pytest.approx(4 * _s(1600, 16, 400))
    assert cost["search"] == pytest.approx(_s(2000, 32, 10000) + _s(2000, 64, 10000))
    assert cost["recheck"] == pytest.approx(2 * _s(1600, 64, 400))
    assert cost["seeds"] == pytest.approx(2 * _s(2000, 64, 10000))
    worst = plan.arm_cost(ce, plan.js_chosen(True), True)  # to the cap 128, then the switched setting 64 and 128
    assert worst["search"] == pytest.approx(sum(_s(2000, e, 10000) for e in (32, 64, 128, 64, 128)))
    js = plan.arms[1]
    assert plan.images(js) == 2000 + 10000 and plan.js_chosen(False) == 16 and plan.js_chosen(True) == 32
    assert plan.arm_cost(js, 16, False)["search"] == pytest.approx(_s(12000, 8, 10000, "cached") +
                                                                   _s(12000, 16, 10000, "cached"))
    # a rung starts at half step 5's chosen budget in images seen: 16 x 12,000 / 2 over its own epoch
    by_key = {a.key: a for a in plan.arms}
    assert plan.arm_start(by_key["k0"], 16) == 48 and plan.arm_start(by_key["kall"], 16) == 5
    assert plan.arm_cost(by_key["teacher_weak"], 16, False)["recheck"] == 0.0  # rungs are not re-checked
    caches = plan.caches(False)  # one family per (teacher, list, seed), views = the longest reader
    assert caches["strong/L+k1000/seed1"] == (16, 12000) and caches["strong/L+k1000/seed3"] == (16, 12000)
    assert caches["strong/L/seed1"] == (96, 2000)  # k0's second budget, more than the fine-tune's 4
    assert caches["weak/L+k1000/seed1"] == (16, 12000) and "strong/L/seed3" in caches
    table = plan.table()
    for key in [a.key for a in plan.arms] + ["caches", "teachers", "mining", "transfer"]:
        assert f"| {key} |" in table, key
    assert f"expected {totals['expected'] / 60:.0f} min" in table and "fits the 6-hour target" in table


def test_only_adds_what_an_arm_needs_and_bad_options_exit_2_naming_them(capsys):
    keys = lambda *argv: [a.key for a in Plan(converged.parse_args(list(argv))).arms]  # noqa: E731
    assert keys("--only", "dml") == ["js_mined", "dml"]
    assert keys("--only", "ce_L") == ["ce_L"]
    assert keys("--only", "transfer") == ["ce_L", "js_mined", "finetune"]
    assert keys("--k", "300", "--k-rungs", "0,300,1000,all")[-3:] == ["k0", "k1000", "kall"]
    for argv, name in ((["--only", "nope"], "--only"), (["--start", "ce_L=x"], "--start"), (["--k", "0"], "--k"),
                       (["--k-rungs", "0,abc"], "--k-rungs"), (["--cache-topk", "11"], "--cache-topk"),
                       (["--max-doublings", "0"], "--max-doublings"), (["--lr-grid", "0.1,x"], "could not")):
        with pytest.raises(SystemExit) as exc:
            converged.parse_args(argv)
        assert exc.value.code == 2, argv
        assert name in capsys.readouterr().err, argv


# ---- resumption ------------------------------------------------------------------------------------------------

class _Killed(Exception):
    """Stands for the process being killed mid-run."""


def _curve(epochs, lr, wd):
    return min(0.5 + 0.1 * math.log2(epochs / 4), 0.7) + {0.05: 0.0, 0.1: 0.02, 0.2: -0.01}[lr] - \
        (0.005 if wd > 1e-4 else 0.0)


@pytest.fixture
def fake_trainer(monkeypatch):
    """build_trainer replaced: fit() returns _curve(epochs, lr, wd), records (label, epochs, resumed), and for a
    label in ``kill`` writes the run's first-epoch checkpoint, then dies (once)."""
    import ppssld.engine.builder as builder

    state = {"calls": [], "kill": set()}

    class Trainer:
        def __init__(self, config):
            self.config, self.train_loader = config, [None] * 3

        def fit(self):
            g = self.config["Global"]
            label = os.path.basename(g["output_dir"]).rsplit("_", 1)[0]
            state["calls"].append((label, g["epochs"], bool(g.get("checkpoints"))))
            folder = builder.save_dir(self.config)
            os.makedirs(folder, exist_ok=True)
            if label in state["kill"] and not g.get("checkpoints"):
                state["kill"].discard(label)
                with open(os.path.join(folder, "latest.pdparams"), "wb") as handle:
                    handle.write(b"epoch 1")
                raise _Killed(label)
            lr = float(self.config["Optimizer"]["lr"]["learning_rate"])
            return {"best_metric": _curve(g["epochs"], lr, float(self.config["Optimizer"]["regularizer"]["coeff"]))}

    monkeypatch.setattr(builder, "build_trainer", Trainer)
    return state


def _ladder(tmp_path):
    lad = converged.ConvergedLadder(converged.parse_args(["--work", str(tmp_path / "work"), "--start", "ce_L=4",
                                                          "--only", "ce_L", "--max-doublings", "4"]))
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    labels = tmp_path / "label_list.txt"
    labels.write_text("".join(f"{i} c{i}\n" for i in range(10)))
    rows = "".join(f"train/{i:05d}.png {i % 10}\n" for i in range(50))
    (tmp_path / "L.txt").write_text(rows)
    (tmp_path / "test.txt").write_text(rows)
    lad.data = {"student": {"root": str(root), "labels": str(labels), "train": str(tmp_path / "L.txt"),
                            "val": str(tmp_path / "test.txt"), "tune_train": str(tmp_path / "tune_train.txt"),
                            "tune_val": str(tmp_path / "tune_val.txt")}}
    lad.tune_split()
    lad.results = {}
    return lad


def test_an_interrupted_search_resumes_its_killed_run_and_skips_every_finished_budget(tmp_path, fake_trainer, caplog):
    killed = "ce_L_seed1_ep16_lr0.1_wd5e-05"
    fake_trainer["kill"].add(killed)
    lad = _ladder(tmp_path)
    with pytest.raises(_Killed):
        lad.main_arm(lad.plan.arms[0])
    first = list(fake_trainer["calls"])
    tune = [("ce_L_tune_seed1_ep2_lr%g_wd5e-05" % lr, 2, False) for lr in (0.05, 0.1, 0.2)] + \
        [("ce_L_tune_seed1_ep2_lr0.1_wd0.0005", 2, False)]
    assert first == tune + [("ce_L_seed1_ep4_lr0.1_wd5e-05", 4, False), ("ce_L_seed1_ep8_lr0.1_wd5e-05", 8, False),
                            (killed, 16, False)]
    fake_trainer["calls"].clear()
    lad = _ladder(tmp_path)
    with caplog.at_level("INFO", logger="ppssld.benchmark.ladder"):
        out = lad.main_arm(lad.plan.arms[0])
    # the second sitting trains only what the first did not finish: the killed run from its checkpoint, then on
    assert fake_trainer["calls"] == [(killed, 16, True), ("ce_L_seed1_ep32_lr0.1_wd5e-05", 32, False),
                                     ("ce_L_tune_seed1_ep32_lr0.1_wd5e-05", 32, False),
                                     ("ce_L_tune_seed1_ep32_lr0.1_wd0.0005", 32, False),  # the runner-up
                                     ("ce_L_seed2_ep32_lr0.1_wd5e-05", 32, False),
                                     ("ce_L_seed3_ep32_lr0.1_wd5e-05", 32, False)]
    assert caplog.text.count("finished earlier, skipped") == 4 + 2 + 1  # tuning, budgets 4 and 8, seed 1 at 32
    assert f"{killed}: resuming the interrupted run" in caplog.text
    assert out["chosen"] == 32 and out["plateaued"] and out["setting"] == {"lr": 0.1, "wd": 5e-05}
    assert [b["epochs"] for b in out["search"]["budgets"]] == [4, 8, 16, 32] and not out["recheck"]["switched"]
    assert out["stats"]["mean"] == pytest.approx(0.72) and out["stats"]["n"] == 3
    resumed = [e for e in lad.log if e["label"] == killed]
    assert len(resumed) == 1 and resumed[0]["top1"] == pytest.approx(0.72)
    assert json.loads(next((tmp_path / "work" / "runs").glob(killed + "_*/result.json")).read_text())["resumed"]
    # a third sitting trains nothing
    fake_trainer["calls"].clear()
    again = _ladder(tmp_path).main_arm(lad.plan.arms[0])
    assert fake_trainer["calls"] == [] and again["stats"] == out["stats"]


# ---- soft-label cache families ---------------------------------------------------------------------------------

def test_a_larger_cache_links_the_views_of_its_familys_largest_finished_cache(tmp_path):
    from ppssld.cache import store

    name = "C_strong_L_seed1_abcd1234"
    for views, finished in ((2, True), (4, True), (8, False)):
        folder = tmp_path / f"{name}_v{views}"
        for view in range(views):
            for path in store.chunk_paths(str(folder), view, 0):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as handle:
                    handle.write(f"{views}/{view}")
        if finished:
            (tmp_path / f"{name}_v{views}.json").write_text("{}")
    out = tmp_path / f"{name}_v16"
    assert ConvergedRuns.link_views(name, str(out), 16) == 4  # v8 never finished: not a lender
    for view in range(4):
        for src, dst in zip(store.chunk_paths(str(tmp_path / f"{name}_v4"), view, 0),
                            store.chunk_paths(str(out), view, 0)):
            assert os.path.samefile(src, dst)  # hard links: no copy, same bytes
    assert not os.path.exists(store.chunk_paths(str(out), 4, 0)[0])
    assert ConvergedRuns.link_views(name, str(out), 16) == 4  # idempotent (a resumed generation)
    assert ConvergedRuns.link_views(name, str(tmp_path / f"{name}_v2b"), 2) == 0  # nothing smaller than 2
    assert ConvergedRuns.link_views("C_other_seed1_ffff0000", str(tmp_path / "C_other_seed1_ffff0000_v8"), 8) == 0


# ---- the report ------------------------------------------------------------------------------------------------

def _arm(key, step, name, top1, chosen, plateaued=True, budgets=None, tune=None):
    seeds = {str(i + 1): {"top1": t, "wall_s": 60.0, "cpu_s": 110.0, "images_seen": 2000 * chosen,
                          "label": f"{key}_seed{i + 1}"} for i, t in enumerate(top1)}
    budgets = budgets or [{"epochs": chosen // 2, "top1": top1[0] - 0.002},
                          {"epochs": chosen, "top1": top1[0], "gain": 0.2}]
    stop = "plateau: ..." if plateaued else f"cap, not converged: {2 * chosen} epochs would pass the cap of {chosen}"
    return {"key": key, "step": step, "name": name, "setting": {"lr": 0.1, "wd": 5e-05}, "chosen": chosen,
            "search": {"budgets": budgets, "chosen": chosen, "plateaued": plateaued, "stop": stop},
            "plateaued": plateaued, "cap_reason": None if plateaued else stop, "seeds": seeds,
            "stats": plateau.stats(top1), "tune": tune}


def _payload():
    tune = {"epochs": 16, "runs": [{"lr": 0.05, "wd": 5e-05, "held_out": 0.70}, {"lr": 0.1, "wd": 5e-05,
                                                                                  "held_out": 0.74}],
            "chosen": {"lr": 0.1, "wd": 5e-05}, "runner_up": {"lr": 0.05, "wd": 5e-05}}
    arms = {"ce_L": _arm("ce_L", "1", "CE on L", [0.780, 0.785, 0.782], 64, tune=tune),
            "js_mined": _arm("js_mined", "5", "SSLD JS on L + mined (k=1000)", [0.818, 0.820, 0.822], 16),
            "finetune": _arm("finetune", "6", "+ fine-tune on L", [0.824, 0.826, 0.825], 4),
            "ce_oracle": _arm("ce_oracle", "0", "CE oracle", [0.850], 32, plateaued=False),
            "k0": _arm("k0", "rung", "mined: none (k=0, L only)", [0.790], 96)}
    arms["ce_L"]["recheck"] = {"epochs": 64, "switched": False, "chosen": {"lr": 0.1, "wd": 5e-05, "held_out": 0.75},
                               "runner_up": {"lr": 0.05, "wd": 5e-05, "held_out": 0.73}}
    verdicts = {k: plateau.verdict(dict(arms[k]["stats"], plateaued=arms[k]["plateaued"]),
                                   dict(arms["ce_L"]["stats"], plateaued=True)) for k in ("js_mined", "finetune")}
    runs = [{"arm": k, "kind": "search", "seed": 1, "epochs": b["epochs"], "lr": 0.1, "wd": 5e-05, "split": "test",
             "top1": b["top1"]} for k, a in arms.items() for b in a["search"]["budgets"]]
    runs += [{"arm": "ce_L", "kind": "seed", "seed": s, "epochs": 64, "lr": 0.1, "wd": 5e-05, "split": "test",
              "top1": arms["ce_L"]["seeds"][str(s)]["top1"]} for s in (2, 3)]
    walls = {"T_teacher_weak_seed1": 600.0, "ce_L_seed1_ep64_lr0.1_wd5e-05": 3000.0, "C_strong_L_seed1_v96": 1800.0}
    return {"command": "-m benchmark.ladder converged", "settings": {"labeled": 2000, "pool": 20000, "k": "1000",
                                                                     "k_rungs": "0,300,all", "seeds": "1,2,3",
                                                                     "plateau": 0.5, "held_out": "400 images of L"},
            "teachers": {"weak": {"top1": 0.8933, "epochs": 1}, "strong": {"top1": 0.9231, "epochs": 4}},
            "mining": {"M_mine_strong_k1000": {"selected": 9938, "scored": 20000, "removed_duplicates": 3063,
                                               "wall_s": 102.0}},
            "arms": arms, "verdicts": verdicts, "runs": runs,
            "transfer": {"dataset": "digits", "epochs": 15, "lr": 0.05,
                         "ce_L": {"runs": {"1": {"top1": 0.62}, "2": {"top1": 0.64}}, "stats": plateau.stats([.62, .64])},
                         "finetune": {"runs": {"1": {"top1": 0.79}}, "stats": plateau.stats([0.79])}},
            "caches": {"C_strong_L_seed1_v96": {"views": 96, "linked_views": 48, "images": 2000, "wall_s": 1800.0,
                                                "readers": ["k0_seed1_ep96"]}},
            "cache_refused": {}, "total_wall_s": 5400.0, "total_cpu_s": 9900.0, "invocation_wall_s": 600.0,
            "invocation_cpu_s": 1100.0, "wall_s_by_unit": walls, "cpu_s_by_unit": {k: 2 * v for k, v in walls.items()},
            "plan": "| arm | ... |"}


def test_the_report_renders_the_converged_table_factors_searches_and_times_from_ladder_json(tmp_path):
    path = tmp_path / "ladder.json"
    path.write_text(json.dumps(_payload()))  # round-trips through JSON as the real file does
    p = json.loads(path.read_text())
    md = markdown(p)
    assert "| 1 | ce_L | CE on L | 64 | 128,000 | yes | 78.00%, 78.50%, 78.20% | 78.23% ± 0.50 | - | - |" in md
    # step 6: 82.50 - 78.23 = +4.27 points over the larger spread 0.50 (ce_L's): 8.5x; the goal is met
    assert "| 6 | finetune | + fine-tune on L | 4 | 8,000 | yes | 82.40%, 82.60%, 82.50% | 82.50% ± 0.20 | +4.27 | " \
           "8.5x |" in md
    assert "**finetune** (+ fine-tune on L) vs **ce_L**: +4.27 points, largest seed spread 0.50, ratio 8.53" in md
    assert md.count("**met**") == 2
    assert "| 0 | ce_oracle | CE oracle | 32 | 64,000 | **no** (cap, not converged: 64 epochs would pass the cap of " \
           "32) | 85.00% | 85.00% (1 seed) | +6.77 | 13.5x |" in md
    assert "| mined amount | k=0 | 96 | 192,000 | yes | 79.00% (1 seed) | -3.00 |" in md
    assert "| mined amount | k=1000 (step 5) | 16 |" in md and "| fine-tune | on (step 6) | 4 |" in md
    assert "| teacher | 1-epoch teacher |" not in md  # only what ran is listed
    assert "| ce_L | lr 0.1, wd 5e-05 | 64 | 78.00% | +0.20 | **yes** |" in md
    assert "| ce_L | 16 | lr 0.05, wd 5e-05: 70.00%, lr 0.1, wd 5e-05: 74.00% | lr 0.1, wd 5e-05 | lr 0.05, wd 5e-05 |" \
        in md
    assert "| ce_L | 64 | lr 0.1, wd 5e-05: 75.00% | lr 0.05, wd 5e-05: 73.00% | no |" in md
    assert "| ce_L | 62.00%, 64.00% | 63.00% ± 2.00 |" in md and "| finetune | 79.00% | 79.00% (1 seed) |" in md
    assert "**Total: 1.50 h wall, 2.75 h CPU**" in md and "| teachers | 1 | 10.0 min | 20.0 min |" in md
    assert "| C_strong_L_seed1_v96 | 96 (48) | 2,000 | 30.0 min | 1 runs |" in md
    assert "9,938 of 20,000 pool images selected (3,063 test near-duplicates removed)" in md
    assert "weak 89.33% (1 epoch), strong 92.31% (4 epochs)" in md
    plot(p, str(tmp_path / "ladder.png"))
    assert (tmp_path / "ladder.png").stat().st_size > 20000
