"""The converged ladder's report: ``ladder.md`` (tables) and ``ladder.png`` (test top-1 against epochs, every arm,
one line per seed) from the results payload of ``converged.py``; only what ran is listed."""
import json
import math
from typing import Any, Dict, List, Optional

def factors(k: str, k_rungs: str) -> List[Any]:
    """(factor, [(arm key, label), ...]) of the factor table; the mined amounts in rising k, step 5's among them."""
    ks = sorted({k} | {r.strip() for r in k_rungs.split(",") if r.strip()},
                key=lambda v: float("inf") if v == "all" else int(v))
    mined = [("js_mined", f"k={k} (step 5)") if v == k else (f"k{v}", f"k={v}") for v in ks]
    return [("teacher", [("js_mined", "strong teacher (step 5)"), ("teacher_weak", "1-epoch teacher")]),
            ("loss", [("js_mined", "JS (step 5)"), ("dml", "DML"), ("kl_t4", "KL, T=4")]),
            ("mined amount", mined), ("fine-tune", [("js_mined", "off (step 5)"), ("finetune", "on (step 6)")])]


def pct(x: Optional[float]) -> str:
    """0.7812 -> ``78.12%`` (None -> ``-``)."""
    return "-" if x is None else f"{100 * x:.2f}%"


def setting(s: Optional[Dict[str, float]]) -> str:
    """``lr 0.1, wd 5e-05`` (None -> ``-``)."""
    return "-" if s is None else f"lr {s['lr']:g}, wd {s['wd']:g}"


def mean_spread(stats: Dict[str, Any]) -> str:
    """``78.12% ± 0.40`` (spread = max - min over the seeds, in points)."""
    if not stats or stats.get("mean") is None:
        return "-"
    return pct(stats["mean"]) + (f" ± {100 * stats['spread']:.2f}" if stats["n"] > 1 else " (1 seed)")


def converged_rows(p: Dict[str, Any]) -> List[str]:
    """The converged table: every arm at its chosen budget, with the delta against step 1."""
    arms, ref = p["arms"], p["arms"].get("ce_L")
    rows = ["| step | arm | what | chosen epochs | images seen | plateaued | top-1 per seed | mean ± spread | "
            "delta vs step 1 | gain / largest spread |", "|" + "---|" * 10]
    for key, a in arms.items():
        seeds = a["seeds"]
        images = next(iter(seeds.values()))["images_seen"] if seeds else 0
        delta = ratio = "-"
        if ref and key != "ce_L" and a["stats"]["mean"] is not None:
            gain = 100 * (a["stats"]["mean"] - ref["stats"]["mean"])
            spread = 100 * max(a["stats"]["spread"], ref["stats"]["spread"])
            delta = f"{gain:+.2f}"
            ratio = f"{gain / spread:.1f}x" if spread > 0 else "-"
        flag = "yes" if a["plateaued"] else f"**no** ({a['cap_reason']})"
        rows.append(f"| {a['step']} | {key} | {a['name']} | {a['chosen']} | {images:,} | {flag} | "
                    f"{', '.join(pct(s['top1']) for s in seeds.values())} | {mean_spread(a['stats'])} | {delta} | "
                    f"{ratio} |")
    return rows + ["", "Spread: max - min over the seeds, in points. Gain / largest spread: the delta against step 1 "
                   "over the larger of the two arms' spreads. Rungs and step 0 train one seed.", ""]


def verdict_rows(p: Dict[str, Any]) -> List[str]:
    """The goal, stated: step 6 (and 5) against converged CE on L."""
    rows = []
    for key, v in p.get("verdicts", {}).items():
        a = p["arms"][key]
        rows.append(f"- **{key}** ({a['name']}) vs **ce_L**: {v['gain']:+.2f} points, largest seed spread "
                    f"{v['largest_spread']:.2f}, ratio {v['ratio'] if v['ratio'] is not None else '-'}; goal (>= 3 "
                    f"points, >= 3x the spread, both plateaued, >= 2 seeds each): "
                    f"{'**met**' if v['goal_met'] else '**not met**'}")
    return rows + [""] if rows else []


def search_rows(p: Dict[str, Any]) -> List[str]:
    """Every budget each search trained (seed 1), its gain over half the epochs, and where it stopped."""
    rows = [f"Budget search (seed {p['settings']['seeds'].split(',')[0]}; each budget a full run with its own cosine "
            f"schedule; plateau: a doubling gains < {p['settings']['plateau']:g} points, the larger budget chosen):",
            "", "| arm | setting | epochs | test top-1 | gain vs half | chosen |", "|" + "---|" * 6]
    for key, a in p["arms"].items():
        for found in ([a["search"]["first"]] if "first" in a["search"] else []) + [a["search"]]:
            last = found is a["search"]
            for b in found["budgets"]:
                gain = f"{b['gain']:+.2f}" if "gain" in b else "-"
                used = a["setting"] if last else a["tune"]["chosen"]
                rows.append(f"| {key} | {setting(used)} | {b['epochs']} | {pct(b['top1'])} | {gain} | "
                            f"{'**yes**' if last and b['epochs'] == a['chosen'] else ''} |")
            rows.append(f"| {key} | stop: {found['stop']}{'' if last else ' (then re-checked: switched)'} | | | | |")
    return rows + [""]


def tune_rows(p: Dict[str, Any]) -> List[str]:
    """The held-out searches and the re-checks at the chosen budgets."""
    rows = [f"LR / weight decay on the held-out part of L ({p['settings']['held_out']}; trained on the other 80%), "
            "never the test set:", "", "| arm | epochs | held-out top-1 per setting | chosen | runner-up |",
            "|---|---|---|---|---|"]
    checks = ["", "Re-check at the chosen budget (same split): the tuned setting and the runner-up:", "",
              "| arm | epochs | chosen: held-out | runner-up: held-out | switched |", "|---|---|---|---|---|"]
    for key, a in p["arms"].items():
        t = a.get("tune")
        if not t:
            continue
        cells = ", ".join(f"{setting(r)}: {pct(r['held_out'])}" for r in t["runs"])
        rows.append(f"| {key} | {t['epochs']} | {cells} | {setting(t['chosen'])} | {setting(t['runner_up'])} |")
        c = a.get("recheck")
        if c:
            runner = c.get("runner_up")
            checks.append(f"| {key} | {c['epochs']} | {setting(c['chosen'])}: {pct(c['chosen']['held_out'])} | "
                          f"{setting(runner)}: {pct(runner['held_out']) if runner else '-'} | "
                          f"{'**yes**' if c['switched'] else 'no'} |")
    return rows + checks + [""]


def factor_rows(p: Dict[str, Any]) -> List[str]:
    """The paper's factors, one rung each at its plateau, against step 5."""
    arms, js = p["arms"], p["arms"].get("js_mined")
    if not js:
        return []
    rows = ["Factors (one rung each, at its own plateau; rungs train seed 1, step 5 and 6 every seed):", "",
            "| factor | rung | chosen epochs | images seen | plateaued | top-1 (mean ± spread) | vs step 5 |",
            "|" + "---|" * 7]
    for factor, rungs in factors(str(p["settings"]["k"]), str(p["settings"]["k_rungs"])):
        for key, label in rungs:
            a = arms.get(key)
            if a is None:
                continue
            images = next(iter(a["seeds"].values()))["images_seen"] if a["seeds"] else 0
            vs = "-" if key == "js_mined" else f"{100 * (a['stats']['mean'] - js['stats']['mean']):+.2f}"
            rows.append(f"| {factor} | {label} | {a['chosen']} | {images:,} | {'yes' if a['plateaued'] else '**no**'}"
                        f" | {mean_spread(a['stats'])} | {vs} |")
    return rows + ["", f"Step 5's seed spread: {100 * js['stats']['spread']:.2f} points.", ""]


def transfer_rows(p: Dict[str, Any]) -> List[str]:
    """The digits transfer from the converged backbones."""
    t = p.get("transfer")
    if not t:
        return []
    rows = [f"Transfer to {t['dataset']} ({t['epochs']} epochs, LR {t['lr']:g}, lr_mult_list), from the chosen runs:",
            "", "| backbone | top-1 per seed | mean ± spread |", "|---|---|---|"]
    for key in ("ce_L", "finetune"):
        if key in t:
            rows.append(f"| {key} | {', '.join(pct(r['top1']) for r in t[key]['runs'].values())} | "
                        f"{mean_spread(t[key]['stats'])} |")
    return rows + [""]


def time_rows(p: Dict[str, Any]) -> List[str]:
    """Wall and CPU time by part, the caches and the mining."""
    parts: Dict[str, List[float]] = {}
    for label, wall in p["wall_s_by_unit"].items():
        part = ("teachers" if label.startswith("T_") else "mining" if label.startswith("M_") else
                "soft-label caches" if label.startswith("C_") else "transfer" if label.startswith("X_") else
                "tuning and re-checks" if "_tune_" in label else label.split("_seed")[0])
        slot = parts.setdefault(part, [0, 0.0, 0.0])
        slot[0], slot[1], slot[2] = slot[0] + 1, slot[1] + wall, slot[2] + p["cpu_s_by_unit"].get(label, 0.0)
    rows = ["Time by part (every unit's own time, this invocation's or an earlier one's):", "",
            "| part | units | wall | CPU |", "|---|---|---|---|"]
    rows += [f"| {k} | {v[0]} | {v[1] / 60:.1f} min | {v[2] / 60:.1f} min |" for k, v in parts.items()]
    rows += ["", f"**Total: {p['total_wall_s'] / 3600:.2f} h wall, {p['total_cpu_s'] / 3600:.2f} h CPU** (all units; "
             f"this invocation {p['invocation_wall_s'] / 60:.1f} min wall, {p['invocation_cpu_s'] / 60:.1f} min CPU).",
             ""]
    if p.get("caches"):
        rows += ["Soft-label caches (a family's larger cache links the views of its smaller one):", "",
                 "| cache | views (linked) | images | wall | read by |", "|---|---|---|---|---|"]
        rows += [f"| {k} | {c['views']} ({c['linked_views']}) | {c['images']:,} | {c['wall_s'] / 60:.1f} min | "
                 f"{len(c['readers'])} runs |" for k, c in p["caches"].items()]
        rows.append("")
    for label, m in p.get("mining", {}).items():
        rows.append(f"- {label}: {m['selected']:,} of {m['scored']:,} pool images selected "
                    f"({m['removed_duplicates']:,} test near-duplicates removed), {m['wall_s'] / 60:.1f} min")
    for label, why in (p.get("cache_refused") or {}).items():
        rows.append(f"- {label} trained online: the cache was refused ({why})")
    return rows + [""]


def markdown(p: Dict[str, Any]) -> str:
    """``ladder.md``."""
    t = p["teachers"]
    rows = ["# The converged ladder", "",
            f"Teachers (ResNet18, all labels): weak {pct(t['weak']['top1'])} ({t['weak']['epochs']} epoch), strong "
            f"{pct(t['strong']['top1'])} ({t['strong']['epochs']} epochs). L = {p['settings']['labeled']:,} labels, "
            f"pool {p['settings']['pool']:,}, step 5 mines k = {p['settings']['k']} per class.", ""]
    rows += verdict_rows(p) + converged_rows(p) + factor_rows(p) + search_rows(p) + tune_rows(p) + \
        transfer_rows(p) + time_rows(p)
    rows += [f"Settings: `{json.dumps(p['settings'])}`", "", "Plan (printed before the run):", "", p["plan"], ""]
    return "\n".join(rows)


def plot(p: Dict[str, Any], path: str) -> None:
    """``ladder.png``: per arm, test top-1 against the epoch budget (log scale); the first seed's line joins its
    search's budgets, every other seed is its run at the chosen budget; the chosen budget is ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = p["arms"]
    cols = 4
    rows = max(1, math.ceil(len(arms) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, (key, a) in zip(axes.flat, arms.items()):
        runs = [r for r in p["runs"] if r["arm"] == key and r["split"] == "test"]
        final = (a["setting"]["lr"], a["setting"]["wd"])
        for seed, lr, wd in sorted({(r["seed"], r["lr"], r["wd"]) for r in runs}, key=lambda t: (t[0], t[1:] == final)):
            mine = sorted((r for r in runs if (r["seed"], r["lr"], r["wd"]) == (seed, lr, wd)),
                          key=lambda r: r["epochs"])
            style, tag = ("o-", f"seed {seed}") if (lr, wd) == final else ("x--", f"seed {seed}, lr {lr:g} wd {wd:g} "
                                                                           "(before the re-check)")
            ax.plot([r["epochs"] for r in mine], [100 * r["top1"] for r in mine], style, ms=4, label=tag)
        ax.plot([a["chosen"]] * len(a["seeds"]), [100 * s["top1"] for s in a["seeds"].values()], "o", ms=10,
                mfc="none", mec="k")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{a['step']} {key}{'' if a['plateaued'] else ' (cap, not plateaued)'}", fontsize=9)
        ax.set_xlabel("epochs (each a full run)", fontsize=8)
        ax.set_ylabel("test top-1 (%)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(arms):]:
        ax.axis("off")
    fig.suptitle("Converged ladder: test top-1 against the epoch budget (ringed: the chosen budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
