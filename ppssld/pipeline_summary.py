"""What the pipeline shows at the end: the table (``summary.md``), the picture (``summary.png``) and the
commands that evaluate, export and predict with its artefacts."""
import logging
import os
import shlex
import sys
from typing import Any, Dict, List, Optional

from ppssld.config import get
from ppssld.utils.io import atomic_save

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def summary_figure(results: Dict[str, Dict[str, Any]]) -> Optional[Any]:
    """The matplotlib Figure of ``summary.png`` (the caller closes it): top-1 bars (teacher, CE baseline, SSLD
    student, fine-tuned) and the per-epoch test top-1 of the baseline and the SSLD student against images seen.
    None when there is nothing to draw."""
    bars = [(label, teacher_top1(results) if s == "teacher" else results[s].get("top1"))
            for s, label in BARS if s in results]
    bars = [(label, v) for label, v in bars if isinstance(v, (int, float))]
    if not bars:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2), dpi=100)
    try:
        colors = {"teacher": "tab:grey", "CE baseline": "tab:orange", "SSLD student": "tab:blue",
                  "SSLD + fine-tune": "tab:green"}
        values = [100 * v for _, v in bars]
        left.bar(range(len(bars)), values, color=[colors[label] for label, _ in bars])
        for i, v in enumerate(values):
            left.text(i, v + 0.5, f"{v:.1f}", ha="center", va="bottom", fontsize=9)
        left.set_xticks(range(len(bars)))
        left.set_xticklabels([label for label, _ in bars], fontsize=9)
        low = max(0.0, min(values) - 15)
        left.set_ylim(low, min(100.0, max(values) + 6))
        left.set_ylabel("test top-1 (%)")
        base = (results.get("baseline") or {}).get("top1")
        best = (results.get("finetune") or results.get("distill") or {}).get("top1")
        gain = f": SSLD {100 * (best - base):+.1f} points over CE" if isinstance(base, float) and isinstance(
            best, float) else ""
        left.set_title(f"Same test set, same labeled images{gain}", fontsize=10)
        shift = 0
        for stage, label in BARS[1:]:
            curve = (results.get(stage) or {}).get("curve") or []
            if curve:
                xs = [(shift + c["images_seen"]) / 1000 for c in curve]
                ys = [100 * c["top1"] for c in curve]
                before = (results.get("distill") or {}).get("curve") or []
                if stage == "finetune" and before:  # the fine-tune continues from the distilled student
                    xs, ys = [shift / 1000] + xs, [100 * before[-1]["top1"]] + ys
                right.plot(xs, ys, marker="o", color=colors[label], label=label)
            if stage == "distill":
                shift = (results.get("distill") or {}).get("images_seen", 0)
        teacher = teacher_top1(results)
        if isinstance(teacher, float):
            right.axhline(100 * teacher, color=colors["teacher"], linestyle="--", linewidth=1, label="teacher")
        right.set_xlabel("images seen by the student (thousands)")
        right.set_ylabel("test top-1 (%) after each epoch")
        right.set_title("Per-epoch test top-1", fontsize=10)
        right.grid(alpha=0.3)
        right.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
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
    if export:
        lines += ["# export it again (Paddle Inference model, pretrained weights, PaddleHub module)",
                  f"{python} {tool('tools', 'export_model.py')} -c {shlex.quote(cfg)} -o "
                  f"Global.pretrained_model={shlex.quote(weights)} --save_dir {shlex.quote(_shown(os.path.dirname(export['model_dir'])))}",
                  "# predict test images with the exported model",
                  f"{python} {tool('deploy', 'python', 'predict_cls.py')} --model_dir "
                  f"{shlex.quote(_shown(export['model_dir']))} --image {shlex.quote(_shown(export['predicted_image']))}"]
    return lines


def warmup_note(stage: str, config: Dict[str, Any], curve: List[Dict[str, Any]]) -> Optional[str]:
    """Why an evaluation at the end of a warm-up epoch reads low (measured: benchmark/results/first_epoch_eval.md)."""
    warmup = float(get(config, "Optimizer.lr.warmup_epoch", 0) or 0)
    early = [c for c in curve if c["epoch"] <= warmup and c["epoch"] < curve[-1]["epoch"]]
    if not warmup or not early:
        return None
    return (f"{stage}: the evaluation after epoch {early[-1]['epoch']} ({100 * early[-1]['top1']:.2f}%) fell at the end "
            f"of the warm-up, at the peak learning rate: BatchNorm's running statistics (an average over the last "
            f"~10 steps) trail the fast-moving weights there, so it reads low; re-estimated at the same weights the "
            f"main job's student read 67.8% instead of 34.3% (benchmark/results/first_epoch_eval.md). The cosine "
            f"epochs after it are not affected.")
