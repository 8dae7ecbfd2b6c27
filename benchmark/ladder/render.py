"""The ladder's report: ``ladder.md`` (tables) and ``ladder.png`` (top-1 per step) from the results payload.

Only what ran is listed (``--only`` runs a subset). Tables: the ladder, the caches (wall time of each generation),
--converge's budgets, --online-check's "cached vs online", transfer, LR tuning, wall time by part, settings and
the budget.
"""
import json
import textwrap
from typing import Any, Dict, List


def pct(x: float) -> str:
    """0.7812 -> ``78.12%``."""
    return f"{100 * x:.2f}%"


def online_rows(check: Dict[str, Any]) -> List[str]:
    """The "cached vs online" table: per arm, each seed's top-1 both ways and the two agreement rules."""
    rows = ["Cached vs online (--online-check): the same arm trained from the soft-label cache (top-K float16, one "
            "view per epoch) and online (eval-mode teacher run per batch), same seeds and settings. Rule *range*: "
            "the cached top-1 lies within [min, max] of the online seeds; rule *spread*: it lies within the online "
            "seeds' spread (max - min) of the online mean; rule *mean* (the mean row): the cached seeds' mean lies "
            "within the online spread of the online mean. A seed's two runs start from the same weights, so "
            "*cached - online* is that seed's paired difference.", "",
            "| arm | seed | cached top-1 | online top-1 | cached - online | online mean | online spread | in range | "
            "in spread | wall cached | wall online |", "|" + "---|" * 11]
    for key, arm in check.items():
        online = [v["top1"] for v in arm["online"].values()]
        if not online:
            continue
        lo, hi, mean = min(online), max(online), sum(online) / len(online)
        for seed in sorted(set(arm["cached"]) | set(arm["online"])):
            c, o = arm["cached"].get(seed), arm["online"].get(seed)
            diff = f"{100 * (c['top1'] - o['top1']):+.2f}" if c and o else "-"
            rows.append(f"| {key} | {seed} | {pct(c['top1']) if c else '-'} | {pct(o['top1']) if o else '-'} | {diff} | "
                        f"{pct(mean)} | {100 * (hi - lo):.2f} | {(lo <= c['top1'] <= hi) if c else '-'} | "
                        f"{(abs(c['top1'] - mean) <= hi - lo) if c else '-'} | "
                        f"{c['wall_s'] / 60 if c else 0:.1f} min | {o['wall_s'] / 60 if o else 0:.1f} min |")
        cached = [v["top1"] for v in arm["cached"].values()]
        if cached:
            cmean = sum(cached) / len(cached)
            rows.append(f"| {key} | mean | {pct(cmean)} | {pct(mean)} | {100 * (cmean - mean):+.2f} | {pct(mean)} | "
                        f"{100 * (hi - lo):.2f} | | mean: {abs(cmean - mean) <= hi - lo} | | |")
    rows.append("")
    return rows


def converge_rows(conv: Dict[str, Any]) -> List[str]:
    """--converge: every epoch budget's top-1 (per seed, mean) and the chosen budget."""
    rows = ["Converge (--converge): " + next(iter(conv.values()))["protocol"], "",
            "| step | epochs | top-1 per seed | mean | gain vs half the epochs | wall | chosen |", "|" + "---|" * 7]
    for key, c in conv.items():
        prev = None
        for b in c["budgets"]:
            gain = "-" if prev is None else f"{100 * (b['mean'] - prev):+.2f}"
            rows.append(f"| {key} | {b['epochs']} | " + ", ".join(pct(v) for v in b["top1"]) +
                        f" | {pct(b['mean'])} | {gain} | {b['wall_s'] / 60:.1f} min | "
                        f"{'**yes**' if b['epochs'] == c['chosen'] else ''} |")
            prev = b["mean"]
        rows.append(f"| {key} | stop: {c['stop']} | | | | | |")
    rows.append("")
    return rows


PARTS = (("T_", "teacher training"), ("M_", "mining (scoring + de-duplication)"), ("C_", "soft-label caches"),
         ("tune_", "LR search (CE, KD, JS)"), ("X_", "transfer to digits"),
         ("_online_", "online twins (--online-check)"), ("0_", "step 0, every --converge budget"),
         ("1_", "step 1, every --converge budget"), ("", "steps 2-6 (distillation, fine-tune)"))


def wall_by_part(walls: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """Sum every run's and cache's wall seconds by part of the ladder (first matching label pattern wins)."""
    out: Dict[str, Dict[str, float]] = {}
    for label, wall in walls.items():
        part = next(name for pat, name in PARTS if (pat in label if pat.startswith("_") else label.startswith(pat)))
        slot = out.setdefault(part, {"wall_s": 0.0, "units": 0})
        slot["wall_s"], slot["units"] = round(slot["wall_s"] + wall, 1), slot["units"] + 1
    return {name: out[name] for _, name in PARTS if name in out}


def part_rows(parts: Dict[str, Dict[str, float]], total_s: float) -> List[str]:
    """The "wall time by part" table."""
    rows = ["Wall time by part (every run's own time, this invocation's or an earlier one's):", "",
            "| part | units | wall | share |", "|---|---|---|---|"]
    rows += [f"| {name} | {int(v['units'])} | {v['wall_s'] / 60:.1f} min | {100 * v['wall_s'] / total_s:.0f}% |"
             for name, v in parts.items()]
    return rows + [""]


def markdown(p: Dict[str, Any]) -> str:
    """``ladder.md``."""
    base = [s["top1"] for s in p["steps"] if s["step"] == 1]
    ref = sum(base) / len(base) if base else None
    rows = ["| step | name | seed | teacher | images seen | epochs | wall | test top-1 | delta vs step 1 |",
            "|" + "---|" * 9]
    for s in p["steps"]:
        delta = "-" if ref is None else f"{100 * (s['top1'] - ref):+.2f}"
        rows.append(f"| {s['step']} | {s['name']} | {s['seed']} | {s['teacher']} | {s['images_seen']:,} | "
                    f"{s['epochs']} | {s['wall_s'] / 60:.1f} min | {pct(s['top1'])} | {delta} |")
    rows += ["", f"Teacher top-1: {pct(p['teacher_top1'])}. Delta: vs the mean of step 1's seeds"
             f"{' (its chosen --converge budget)' if p.get('converge', {}).get('ce_L') else ''}. Teacher column: "
             "cache = trained from the soft-label cache, online = teacher run per batch."]
    m = p.get("mining")
    if m:
        rows.append(f"Mined {m['selected']} of {m['scored']} pool images ({m['removed_duplicates']} test "
                    f"near-duplicates removed).")
    rows.append("")
    if p.get("caches"):
        rows += ["Soft-label caches (generated once per list and seed, in-process, `ppssld.cache.generate`):", "",
                 "| cache | list | seed | images | views | top-K | wall | read by |", "|" + "---|" * 8]
        rows += [f"| {k} | {c['lists']} | {c['seed']} | {c['images']:,} | {c['views']} | {c['topk']} ({c['dtype']}) |"
                 f" {c['wall_s'] / 60:.1f} min | {', '.join(c['readers'])} |" for k, c in p["caches"].items()]
        rows.append("")
    if p.get("caches") and not p.get("cache_refused"):
        rows += ["Every distillation arm that ran passed the cache rules (`ppssld/cache/rules.py`): eval-mode teacher, "
                 "no batch operators, ImageNetDataset, and losses that read the teacher only through "
                 "softmax(logits / T) (JSDivLoss; KD's KLDivLoss at T=4; its DistillationGTCELoss does not read the "
                 "teacher); the fine-tune loads step 5's student without teacher weights.", ""]
    for label, why in (p.get("cache_refused") or {}).items():
        rows.append(f"- {label} trained online: the cache was refused ({why})")
    if p.get("cache_refused"):
        rows.append("")
    if p.get("converge"):
        rows += converge_rows(p["converge"])
    if p.get("online_check"):
        rows += online_rows(p["online_check"])
    t = p.get("transfer")
    if t:
        rows += [f"Transfer to {t['dataset']}:", "", "| backbone | top-1 | epochs | lr_mult_list applied |",
                 "|" + "---|" * 4]
        rows += [f"| {k} ({v['source_run']}) | {pct(v['top1'])} | {v['epochs']} | {v['lr_mult_list_applied']} |"
                 for k, v in t.items() if isinstance(v, dict)]
        rows += ["", f"Classifier: {t['ssld_step6']['classifier']}.", ""]
    if p.get("tune"):
        rows += [f"LR tuning ({p['settings']['lr_source']}):", "", "| loss | held-out top-1 per LR | chosen |",
                 "|---|---|---|"]
        rows += [f"| {arm} | " + ", ".join(f"{lr}: {pct(v)}" for lr, v in r["held_out_top1"].items()) +
                 f" | {r['chosen']} |" for arm, r in p["tune"].items()]
        rows.append("")
    if p.get("wall_by_part") and p["total_wall_s"] > 0:
        rows += part_rows(p["wall_by_part"], p["total_wall_s"])
    rows += [f"Wall time of every run above, teacher, caches, tuning and mining included (data preparation "
             f"excluded): {p['total_wall_s'] / 60:.0f} min.", "", f"Settings: `{json.dumps(p['settings'])}`",
             "", "Budget:", "", p["budget"], ""]
    return "\n".join(rows)


def plot(p: Dict[str, Any], path: str) -> None:
    """``ladder.png``: top-1 per step (bar = mean over seeds, dots = seeds), the teacher as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_step: Dict[str, List[float]] = {}
    names = {s["step"]: s["name"] for s in p["steps"]}
    for s in p["steps"]:
        by_step.setdefault(s["step"], []).append(100 * s["top1"])
    steps = list(by_step)
    xs = list(range(len(steps)))
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.bar(xs, [sum(by_step[s]) / len(by_step[s]) for s in steps], color="#8fb3d9")
    for x, s in zip(xs, steps):
        ax.plot([x] * len(by_step[s]), by_step[s], "ko", ms=4)
    ax.axhline(100 * p["teacher_top1"], color="r", ls="--", label="teacher")
    top = max([100 * p["teacher_top1"]] + [max(v) for v in by_step.values()])
    low = min([min(v) for v in by_step.values()] or [100 * p["teacher_top1"]])
    ax.set_ylim(max(0.0, low - 5), min(100.0, top + 2))
    ax.set_xticks(xs, [f"{s}\n" + textwrap.fill(names[s], 20) for s in steps], fontsize=7)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"SSLD ladder in miniature: {p['settings']['student']} on {p['settings']['dataset']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
