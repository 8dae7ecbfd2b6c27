"""The ladder's wall time before and after the soft-label cache, measured on the same day as the ladder.

For each named cached run of a finished ladder (default: step 3 and step 5, seed 1), trains its online twin:
the same YAML and overrides without ``Global.soft_label_cache``, timed as the ladder times a run (build +
fit, in-process, ``LadderRuns.train``). The twin's wall over the cached run's gives the arm's online/cached
ratio; the ladder's "before" is then estimated as every cache-reading run's wall x the ratio of its kind
(step 5's for step 5, step 3's for every arm on L and the KD/JS LR search), without the caches' generation.

Usage: python -m benchmark.ladder twin --work /work/ladder_work [--runs 3_js_L_seed1,5_js_mined_seed1]
(run alone, right after the classic ladder, with the ``--work`` folder it used; writes
benchmark/results/ladder/ladder_twin.md/.json)
"""
import argparse
import glob
import os
from typing import Any, Dict, List, Optional

from benchmark import common
from benchmark.ladder.runs import QS, RESULTS, LadderRuns, command_line, load_json

RUN_KEYS = ("Global.seed=", "Global.epochs=", "Global.eval_interval=")  # LadderRuns.train adds these again
CACHE_KEY = "Global.soft_label_cache="


def cached_run(work: str, label: str, ladder: Dict[str, Any]) -> Dict[str, Any]:
    """The result.json of the ladder's cached run ``label`` (the folder whose wall time the ladder recorded)."""
    want = ladder["wall_s_by_run"].get(label)
    for path in sorted(glob.glob(os.path.join(work, "runs", f"{label}_*", "result.json"))):
        result = load_json(path)
        if result.get("soft_label_cache") and result["wall_s"] == want:
            return result
    raise SystemExit(f"error: no cached run {label} with the wall time of {ladder.get('command')} "
                     f"({want} s) under {work}/runs; run the ladder first, with this --work")


def estimate(ladder: Dict[str, Any], ratio: Dict[str, float]) -> Dict[str, Any]:
    """The ladder's wall with every cache-reading run online (x its kind's ratio) and no cache generated."""
    readers = {s["label"]: s["wall_s"] for s in ladder["steps"] if s.get("teacher") == "cache"}
    readers.update({k: v for k, v in ladder["wall_s_by_run"].items() if k.startswith(("tune_kd", "tune_js"))})
    caches = sum(v for k, v in ladder["wall_s_by_run"].items() if k.startswith("C_"))
    online = sum(w * (ratio["js_mined"] if label.startswith("5_") else ratio["js_L"]) for label, w in readers.items())
    after = sum(readers.values()) + caches
    return {"cache_readers": sorted(readers), "after_readers_and_caches_s": round(after, 1),
            "before_estimated_s": round(online, 1), "ladder_after_s": ladder["total_wall_s"],
            "ladder_before_estimated_s": round(ladder["total_wall_s"] - after + online, 1)}


def markdown(p: Dict[str, Any]) -> str:
    """``ladder_twin.md``."""
    rows = ["Online twins of cached ladder runs (same YAML, overrides and start weights; the eval-mode teacher runs "
            "per batch instead of the soft-label cache), timed as the ladder times a run (build + fit).", "",
            "| run | cached wall | cached top-1 | online wall | online top-1 | online / cached |", "|---|---|---|---|---|---|"]
    for label, t in p["twins"].items():
        rows.append(f"| {label} | {t['cached_wall_s']:.1f} s | {100 * t['cached_top1']:.2f}% | {t['online_wall_s']:.1f} s"
                    f" | {100 * t['online_top1']:.2f}% | {t['ratio']:.2f}x |")
    e = p["estimate"]
    rows += ["", f"Ladder `{p['ladder_command']}` ({p['ladder_date']}):", "",
             "| | after (cache, measured) | before (online, estimated) |", "|---|---|---|",
             f"| the {len(e['cache_readers'])} cache-reading runs (+ the caches' generation after) | "
             f"{e['after_readers_and_caches_s'] / 60:.1f} min | {e['before_estimated_s'] / 60:.1f} min |",
             f"| the whole ladder | {e['ladder_after_s'] / 60:.1f} min | {e['ladder_before_estimated_s'] / 60:.1f} min |",
             "", "Estimate: each cache-reading run's measured wall x the online/cached ratio of its kind (step 5's "
             "twin for step 5, step 3's for the arms on L, the fine-tune and the KD/JS LR search); the caches are not "
             "generated online. One seed per twin: the top-1 difference is one draw (see `ladder_cache_check.md` for "
             "the seed spread)."]
    return "\n".join(rows) + "\n"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Train the twins (skipped when done), write the results."""
    from benchmark.ladder.classic import parse_args
    from ppssld.utils.logger import setup_logging

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", required=True, help="the ladder's --work folder")
    p.add_argument("--ladder-json", default=os.path.join(RESULTS, "ladder.json"))
    p.add_argument("--results-dir", default=RESULTS, help="where ladder_twin.{json,md} go")
    p.add_argument("--runs", default="3_js_L_seed1,5_js_mined_seed1", help="cached runs to twin (step 3 and 5 needed)")
    args = p.parse_args(argv)
    setup_logging()
    ladder = load_json(args.ladder_json)
    runs = LadderRuns(parse_args(["--work", args.work]))
    twins, ratio = {}, {}
    for label in args.runs.split(","):
        cached = cached_run(args.work, label, ladder)
        overrides = [o for o in cached["overrides"] if not o.startswith(RUN_KEYS + (CACHE_KEY,))]
        online = runs.train(f"{label}_online_twin", os.path.join(QS, cached["config"]), overrides, cached["epochs"],
                            cached["seed"], 0.0)
        twins[label] = {"cached_wall_s": cached["wall_s"], "cached_top1": cached["top1"],
                        "online_wall_s": online["wall_s"], "online_top1": online["top1"],
                        "ratio": round(online["wall_s"] / cached["wall_s"], 3), "epochs": cached["epochs"]}
        ratio["js_mined" if label.startswith("5_") else "js_L"] = twins[label]["ratio"]
    if set(ratio) != {"js_L", "js_mined"}:
        raise SystemExit("error: --runs needs one run of step 3 (or another arm on L) and one of step 5")
    payload = {"command": command_line(), "ladder_command": ladder["command"], "ladder_date": ladder["date"], "twins": twins,
               "estimate": estimate(ladder, ratio)}
    common.write_results("ladder_twin", payload, markdown(payload), os.path.abspath(args.results_dir))
    return payload

