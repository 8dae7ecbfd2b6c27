"""What the pipeline shows at the end: the table (``summary.md``), the picture (``summary.png``) and the
commands that evaluate, export and predict with its artefacts."""
import logging
import os
import shlex
import sys
from typing import Any, Dict, List, Optional, Tuple

from ppssld.utils.config import get
from ppssld.utils.io import atomic_save

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BARS = (("teacher", "teacher"), ("baseline", "CE baseline"), ("distill", "SSLD student"),
        ("finetune", "SSLD + fine-tune"))


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and value >= 0 else "n/a"


def teacher_top1(results: Dict[str, Dict[str, Any]]) -> Optional[float]:
    """The teacher's test top-1: from its own stage, or (a given teacher) from when distillation began."""
    top1 = (results.get("teacher") or {}).get("top1")
    return top1 if top1 is not None else (results.get("distill") or {}).get("teacher_top1")


def _epochs(n: Any) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _describe(stage: str, r: Dict[str, Any], results: Dict[str, Dict[str, Any]]) -> str:
    counts = (results.get("data") or {}).get("counts", {})
    labeled = counts.get("train_labeled")
    if stage == "teacher":
        if r.get("given"):
            return "teacher (given weights)"
        return f"teacher {r.get('arch')} ({_epochs(r.get('epochs'))} on {counts.get('teacher_labeled', 0):,} labels)"
    if stage == "baseline":
        return (f"CE baseline {r.get('arch')} ({_epochs(r.get('epochs'))} on the {labeled or 0:,} labeled, "
                f"{r.get('images_seen', 0):,} images seen)")
    if stage == "distill":
        mined = (results.get("mine") or {}).get("selected")
        extra = f" + {mined:,} mined" if mined is not None else ""
        return (f"SSLD student (JS, {_epochs(r.get('epochs'))} on {labeled or 0:,} labeled{extra}, "
                f"{r.get('images_seen', 0):,} images seen)")
    total = r.get("images_seen", 0) + (results.get("distill") or {}).get("images_seen", 0)
    return f"SSLD student after the fine-tune ({_epochs(r.get('epochs'))} on the labeled, {total:,} images seen in all)"


def summary_table(results: Dict[str, Dict[str, Any]]) -> str:
    """The final markdown table: top-1 on the test set of teacher, CE baseline and SSLD student (before and after
    the fine-tune), the gain over the baseline in bold, size and speed, artefact paths; then the mined images and
    the exported model's predictions for a few test images (predicted vs true)."""
    speed = (results.get("export") or {}).get("speed") or {}
    base = (results.get("baseline") or {}).get("top1")
    rows = ["| model | top-1 (test) | vs CE baseline | parameters | inference img/s | artefact |",
            "|---|---|---|---|---|---|"]
    for stage, _ in BARS:
        if stage not in results:
            continue
        r = results[stage]
        top1 = teacher_top1(results) if stage == "teacher" else r.get("top1")
        gain = ""
        if stage in ("distill", "finetune") and isinstance(base, float) and isinstance(top1, float):
            gain = f"**{100 * (top1 - base):+.2f} points**"
        size = speed.get("teacher" if stage == "teacher" else "student") or {}
        params = f"{size['params'] / 1e6:.2f}M" if size else ""
        ips = f"{size['images_per_s']:,.0f}" if size else ""
        rows.append(f"| {_describe(stage, r, results)} | {_pct(top1)} | {gain} | {params} | {ips} | "
                    f"`{r.get('best_model')}` |")
    if "mine" in results:
        m = results["mine"]
        right = f"; the teacher's class right for {_pct(m['teacher_right'])}" if m.get("teacher_right") is not None else ""
        rows.append(f"| mined unlabeled images | {m['selected']:,} of {m['scored']:,} scored "
                    f"({m['removed_duplicates']:,} near-duplicates of test images removed{right}) | | | | "
                    f"`{m['report']}` |")
    lines = rows
    if speed:
        lines += ["", f"img/s: eval-mode forward pass, batch {next(iter(speed.values()))['batch_size']}, "
                      f"on this machine's CPU threads (measured in the export stage)."]
    if "export" in results:
        e = results["export"]
        lines += ["", f"Exported `_ssld` model: `{e['model_dir']}`. Its predictions:", "",
                  "| test image | predicted | score | true |", "|---|---|---|---|"]
        for row in e.get("showcase") or [{"image": e["predicted_image"], "predicted":
                                          (e["prediction"].get("label_names") or ["?"])[0], "score": None}]:
            mark = "" if "true" not in row else (" (right)" if row["predicted_id"] == row["true_id"] else " (wrong)")
            score = f"{row['score']:.2f}" if isinstance(row.get("score"), float) else ""
            lines.append(f"| {os.path.basename(row['image'])} | {row['predicted']}{mark} | {score} | "
                         f"{row.get('true', 'unknown')} |")
    return "\n".join(lines)


COLORS = {"teacher": "tab:grey", "baseline": "tab:orange", "distill": "tab:blue", "finetune": "tab:green"}


def _cost(size: Optional[Dict[str, Any]]) -> Optional[str]:
    """``0.40M params · 1,050 img/s`` from a measured size/speed row (export stage); None without one."""
    parts = []
    if isinstance((size or {}).get("params"), (int, float)):
        parts.append(f"{size['params'] / 1e6:.2f}M params")
    if isinstance((size or {}).get("images_per_s"), (int, float)):
        parts.append(f"{size['images_per_s']:,.0f} img/s")
    return " · ".join(parts) or None


def _run(r: Dict[str, Any], prefix: str = "", seen: Any = None, suffix: str = "") -> Optional[str]:
    """``4 epochs · 19,968 images seen`` from what a stage recorded; None when it recorded neither."""
    parts = [prefix + _epochs(r["epochs"])] if isinstance(r.get("epochs"), int) else []
    seen = r.get("images_seen") if seen is None else seen
    if isinstance(seen, int):
        parts.append(f"{seen:,} images seen{suffix}")
    return " · ".join(parts) or None


def bar_label(stage: str, results: Dict[str, Dict[str, Any]]) -> str:
    """A bar's label in ``summary.png``: the model, its label budget (labeled training images; for SSLD also the
    unlabeled images it learned from), its epochs and images seen, and for the teacher and the exported student
    parameters and inference speed. Only what the results record; nothing is filled in."""
    r = results.get(stage) or {}
    counts = (results.get("data") or {}).get("counts") or {}
    labeled = counts.get("train_labeled")
    speed = (results.get("export") or {}).get("speed") or {}
    lines: List[Optional[str]] = [dict(BARS)[stage]]
    budget = f"{labeled:,} labels" if isinstance(labeled, int) else None
    if stage == "teacher":
        lines[0] += " (given weights)" if r.get("given") else (f" {r['arch']}" if r.get("arch") else "")
        teacher_labels = counts.get("teacher_labeled") if not r.get("given") else None
        budget = f"{teacher_labels:,} labels" if isinstance(teacher_labels, int) else None
        lines += [budget, _run(r), _cost(speed.get("teacher"))]
    elif stage == "distill":
        # the unlabeled images it learned from: the mined ones, or (no mining stage) the whole unlabeled list
        kind, unlabeled = (("mined", results["mine"].get("selected")) if "mine" in results
                           else ("unlabeled", counts.get("unlabeled")))
        extra = f"{unlabeled:,} {kind}" if isinstance(unlabeled, int) else None
        lines += [" + ".join(p for p in (budget, extra) if p) or None, _run(r)]
    elif stage == "finetune":
        seen = (r.get("images_seen"), (results.get("distill") or {}).get("images_seen"))
        total = sum(seen) if all(isinstance(s, int) for s in seen) else None
        lines += [budget, _run(r, "+", total, " in all") if total is not None else _run(r, "+")]
    else:
        lines += [budget, _run(r)]
    last = "finetune" if "finetune" in results else "distill"
    if stage == last:
        lines.append(_cost(speed.get("student")))
    return "\n".join(line for line in lines if line)


def summary_caption(results: Dict[str, Dict[str, Any]]) -> str:
    """The caption under ``summary.png``: how long each model trained and how speed was measured."""
    def epochs(stage: str) -> Optional[int]:
        value = (results.get(stage) or {}).get("epochs")
        return value if isinstance(value, int) else None

    runs = [f"teacher {_epochs(epochs('teacher'))}" if epochs("teacher") else None,
            f"CE baseline {_epochs(epochs('baseline'))}" if epochs("baseline") else None]
    if epochs("distill") and epochs("finetune"):
        runs.append(f"SSLD student {epochs('distill')} + {epochs('finetune')} epochs (distillation + fine-tune)")
    elif epochs("distill"):
        runs.append(f"SSLD student {_epochs(epochs('distill'))}")
    lines = []
    if any(runs):
        lines += ["Run length: " + ", ".join(r for r in runs if r) + ".",
                  "\"labels\": labeled training images each model trained on; \"mined\"/\"unlabeled\": images "
                  "without labels that SSLD also learned from."]
    speed = (results.get("export") or {}).get("speed") or {}
    batch = next((row.get("batch_size") for row in speed.values() if isinstance(row, dict)), None)
    if speed:
        lines.append("img/s: eval-mode forward pass" + (f", batch {batch}" if batch else "")
                     + ", on this machine's CPU threads (export stage).")
    return "\n".join(lines)


def _draw_bars(ax: Any, results: Dict[str, Dict[str, Any]], bars: List[Tuple[str, float]]) -> None:
    """Horizontal top-1 bars on a 0-100% axis, each with its value (and SSLD's gain over CE) written on it."""
    values = [100 * v for _, v in bars]
    ax.barh(range(len(bars)), values, height=0.6, color=[COLORS[s] for s, _ in bars])
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([bar_label(s, results) for s, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("test top-1 (%)")
    ax.grid(axis="x", alpha=0.3)
    base = (results.get("baseline") or {}).get("top1")
    for i, ((stage, top1), v) in enumerate(zip(bars, values)):
        text = f"{v:.1f}%"
        if stage in ("distill", "finetune") and isinstance(base, float):
            text += f"  {100 * (top1 - base):+.1f} points vs CE"
        inside = v >= 60
        ax.text(v - 1 if inside else v + 1, i, text, ha="right" if inside else "left", va="center", fontsize=9,
                color="white" if inside else "black", fontweight="bold")
    best = (results.get("finetune") or results.get("distill") or {}).get("top1")
    gain = f": SSLD {100 * (best - base):+.1f} points over CE" if isinstance(base, float) and isinstance(
        best, float) else ""
    ax.set_title(f"Test top-1, same test set{gain}", fontsize=10)


def _draw_curves(ax: Any, results: Dict[str, Dict[str, Any]]) -> None:
    """Per-epoch test top-1 of the baseline and the SSLD student against images seen; the teacher as a line."""
    shift = 0
    for stage, label in BARS[1:]:
        curve = (results.get(stage) or {}).get("curve") or []
        if curve:
            xs = [(shift + c["images_seen"]) / 1000 for c in curve]
            ys = [100 * c["top1"] for c in curve]
            before = (results.get("distill") or {}).get("curve") or []
            if stage == "finetune" and before:  # the fine-tune continues from the distilled student
                xs, ys = [shift / 1000] + xs, [100 * before[-1]["top1"]] + ys
            ax.plot(xs, ys, marker="o", color=COLORS[stage], label=label)
        if stage == "distill":
            shift = (results.get("distill") or {}).get("images_seen", 0)
    teacher = teacher_top1(results)
    if isinstance(teacher, float):
        ax.axhline(100 * teacher, color=COLORS["teacher"], linestyle="--", linewidth=1, label="teacher")
    ax.set_xlabel("images seen by the student (thousands)")
    ax.set_ylabel("test top-1 (%) after each epoch")
    ax.set_title("Per-epoch test top-1", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def summary_figure(results: Dict[str, Dict[str, Any]]) -> Optional[Any]:
    """The matplotlib Figure of ``summary.png`` (the caller closes it): top-1 bars (teacher, CE baseline, SSLD
    student, fine-tuned) from 0 to 100% with each one's label budget, run length and cost, the per-epoch curves,
    and a caption. None when there is nothing to draw."""
    bars = [(s, teacher_top1(results) if s == "teacher" else results[s].get("top1")) for s, _ in BARS if s in results]
    bars = [(s, v) for s, v in bars if isinstance(v, (int, float))]
    if not bars:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13.0, 5.2), dpi=100, gridspec_kw={"width_ratios": [1.3, 1]})
    try:
        _draw_bars(left, results, bars)
        _draw_curves(right, results)
        caption = summary_caption(results)
        if caption:
            fig.text(0.01, 0.01, caption, ha="left", va="bottom", fontsize=8)
        fig.tight_layout(rect=(0, 0.025 * (caption.count("\n") + 1.2) if caption else 0, 1, 1))
    except Exception:
        plt.close(fig)
        raise
    return fig


def plot_summary(results: Dict[str, Dict[str, Any]], path: str) -> bool:
    """Write ``summary.png`` (:func:`summary_figure`); False, and no file, when there is nothing to draw."""
    fig = summary_figure(results)
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return True


def _shown(path: str) -> str:
    """``path`` as a command line shows it: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else os.path.abspath(path)


def next_commands(results: Dict[str, Dict[str, Any]]) -> List[str]:
    """Commands (runnable as written from the current directory) that evaluate the final student, export it
    and predict a test image with the exported model."""
    last = "finetune" if "finetune" in results else "distill"
    if last not in results or "config_used" not in results[last]:
        return []
    python = _shown(sys.executable)

    def tool(*parts: str) -> str:
        return _shown(os.path.join(ROOT, *parts))

    cfg, weights = _shown(results[last]["config_used"]), _shown(results[last]["best_model"])
    lines = [f"# evaluate the {'fine-tuned' if last == 'finetune' else 'distilled'} student on the test set",
             f"{python} {tool('tools', 'eval.py')} -c {shlex.quote(cfg)} -o Global.pretrained_model={shlex.quote(weights)}"]
    export = results.get("export")
    if export:  # into <output_dir>/next/: never into a stage's own folder
        again = os.path.join(os.path.dirname(os.path.dirname(export["model_dir"])), "next", "inference")
        model_dir = os.path.join(again, os.path.basename(export["model_dir"]))
        lines += ["# export it again (Paddle Inference model, pretrained weights, PaddleHub module)",
                  f"{python} {tool('tools', 'export_model.py')} -c {shlex.quote(cfg)} -o "
                  f"Global.pretrained_model={shlex.quote(weights)} --save_dir {shlex.quote(_shown(again))}",
                  "# predict test images with the model just exported",
                  f"{python} {tool('deploy', 'python', 'predict_cls.py')} --model_dir "
                  f"{shlex.quote(_shown(model_dir))} --image {shlex.quote(_shown(export['predicted_image']))}"]
    return lines


def warmup_note(stage: str, config: Dict[str, Any], curve: List[Dict[str, Any]]) -> Optional[str]:
    """Why an evaluation at the end of a warm-up epoch reads low.

    Measured: benchmark/results/studies/first_epoch_eval.md."""
    warmup = float(get(config, "Optimizer.lr.warmup_epoch", 0) or 0)
    early = [c for c in curve if c["epoch"] <= warmup and c["epoch"] < curve[-1]["epoch"]]
    if not warmup or not early:
        return None
    return (f"{stage}: the evaluation after epoch {early[-1]['epoch']} ({100 * early[-1]['top1']:.2f}%) fell at the end "
            f"of the warm-up, at the peak learning rate: BatchNorm's running statistics (an average over the last "
            f"~10 steps) trail the fast-moving weights there, so it reads low; re-estimated at the same weights the "
            f"main job's student read 67.8% instead of 34.3% (benchmark/results/studies/first_epoch_eval.md). "
            f"The cosine epochs after it are not affected.")
