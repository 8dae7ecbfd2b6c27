"""Which PaddleClas configs run in ppssld: load, validate, build, and one training step per DistillationModel.

python benchmark/compat/paddleclas_configs.py --paddleclas-dir /work/paddleclas [--only SUBSTR] [--limit N]
    [--timeout 90] [--merge]

Every YAML under ``ppcls/configs/ImageNet`` and ``ppcls/configs/PULC`` is loaded with
``-o Global.device=cpu`` (this machine has no GPU) and a patched copy held in memory (the files
are never edited): the dataset paths point at generated 64x48 images and a two-image, two-class list
(for a ``MultiLabelDataset``, two rows of 0/1 labels, one per class; for a ``CustomLabelDataset``,
the two paths), batch size 2 (MultiScaleSampler: ``first_bs`` 2), no loader workers, a temporary
output folder. ``pretrained: True`` asks for a
download, which ppssld never does; a frozen model's is replaced by random weights of the same
model saved to a temporary file, any other is dropped (counted in ``substituted``). A frozen model
with no weights at all (PaddleClas's PULC distillation configs expect the user's trained teacher,
which ppssld requires) gets such random weights too, also counted. A ``pretrained`` path that is not
on disk (a placeholder like ``path/to/stage1_best_model_student``, which ppssld refuses with a
WeightsError) is replaced the same way and listed in ``missing_weights``.

Stages: load (:func:`ppssld.utils.config.load_config`), validate (:func:`ppssld.engine.builder.validate`),
build (:func:`ppssld.engine.builder.build_trainer`: model, loss, optimizer, train and eval data
pipelines) and, for a DistillationModel or a PULC config, one training step (``Trainer.train_one_epoch``
over one batch of 2 images at the config's resolution; PULC configs then also evaluate, which runs
their metrics). A PULC ``search.yaml`` (PaddleClas's tools/search_strategy.py input) is planned with
:mod:`ppssld.recipes.search`: every trial config is built in PaddleClas's order (each stage keeping its first
value, as in ``--dry-run``) with the same patches, and the first trial trains one step. Outcome per
config: ``ok``, ``refused`` (a ppssld ConfigError / DataError / WeightsError: its first line), ``crash``
(any other exception) or ``timeout``. Configs run in a worker process, one after another; a config that exceeds the
time limit (tripled for a training step) is killed with its worker, which is restarted.
Writes ``benchmark/results/compat/paddleclas_configs.md`` and ``.json`` (``--merge`` adds to them).
"""
import argparse
import collections
import copy
import json
import logging
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark.common import ROOT, results_dir, write_results  # noqa: E402  (the parent side imports no paddle)

FOLDERS = ("ImageNet", "PULC")
RESULT_NAME = "paddleclas_configs"
LABEL_KEYS = ("cls_label_path", "unlabeled_label_path")


def list_configs(paddleclas_dir: str) -> List[str]:
    """Every config under the measured folders, relative to ``ppcls/configs``, sorted."""
    base = os.path.join(paddleclas_dir, "ppcls", "configs")
    found = []
    for folder in FOLDERS:
        for dirpath, _dirs, files in os.walk(os.path.join(base, folder)):
            found += [os.path.relpath(os.path.join(dirpath, f), base) for f in files if f.endswith((".yaml", ".yml"))]
    if not found:
        raise SystemExit(f"error: no config under {base}/{{{','.join(FOLDERS)}}}: is --paddleclas-dir a PaddleClas "
                         f"checkout?")
    return sorted(found)


def group_of(rel: str) -> str:
    """The report group: ``ImageNet/Distillation``, ``ImageNet`` (every other model folder) or ``PULC``."""
    parts = rel.split(os.sep)
    if parts[0] == "ImageNet" and len(parts) > 2 and parts[1] == "Distillation":
        return "ImageNet/Distillation"
    return parts[0]


# ---- worker side (imports paddle) -----------------------------------------------------------------

def _make_images(folder: str) -> Dict[str, str]:
    """Four 64x48 PNGs and a list of two of them (labels 0 and 1); returns ``{"root", "list"}``."""
    import cv2
    import numpy as np

    root = os.path.join(folder, "images")
    os.makedirs(root, exist_ok=True)
    rng = np.random.RandomState(0)
    lines = []
    for i in range(4):
        cv2.imwrite(os.path.join(root, f"img{i}.png"), rng.randint(0, 255, (48, 64, 3), np.uint8))
        lines.append(f"img{i}.png {i % 2}\n")
    path = os.path.join(folder, "list.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(lines[:2])
    return {"root": root, "list": path}


def _multilabel_list(folder: str, classes: int) -> str:
    """Two images with alternating 0/1 labels over ``classes`` classes (PaddleClas's TAB format)."""
    path = os.path.join(folder, f"multilabel_{classes}.txt")
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(2):
            handle.write(f"img{i}.png\t" + ",".join(str((c + i) % 2) for c in range(classes)) + "\n")
    return path


def _paths_list(folder: str) -> str:
    """The two images as a paths-only list (a ``CustomLabelDataset`` line is the whole path)."""
    path = os.path.join(folder, "paths.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("img0.png\nimg1.png\n")
    return path


def _patch_data(config: Dict[str, Any], data: Dict[str, str]) -> None:
    from ppssld.arch.build import arch_class_num

    loaders = config.get("DataLoader") or {}
    for mode in ("Train", "Eval"):
        section = loaders.get(mode)
        if not isinstance(section, dict):
            continue
        dataset = section.get("dataset")
        if isinstance(dataset, dict):
            if "image_root" in dataset:
                dataset["image_root"] = data["root"]
            for key in LABEL_KEYS:
                if dataset.get(key):
                    dataset[key] = data["list"]
            if dataset.get("name") == "MultiLabelDataset" and dataset.get("cls_label_path"):
                classes = arch_class_num(config.get("Arch") or {}) or 2
                dataset["cls_label_path"] = _multilabel_list(os.path.dirname(data["list"]), classes)
            if dataset.get("sample_list_path"):
                dataset["sample_list_path"] = _paths_list(os.path.dirname(data["list"]))
        if isinstance(section.get("sampler"), dict) and "first_bs" in section["sampler"]:
            section["sampler"]["first_bs"] = 2  # MultiScaleSampler: batch size at the first scale
        elif isinstance(section.get("sampler"), dict):
            section["sampler"]["batch_size"] = 2
            section["sampler"]["drop_last"] = False
        if isinstance(section.get("loader"), dict):
            section["loader"]["num_workers"] = 0
            section["loader"]["use_shared_memory"] = False


def _missing_paths(config: Dict[str, Any]) -> List[str]:
    """Turn each ``pretrained`` path of ``Arch`` that is not on disk (PaddleClas's placeholders such as
    ``path/to/stage1_best_model_student``) into ``True``, so :func:`_patch_weights` replaces it like a
    download; returns those paths. ppssld itself refuses such a path with a WeightsError."""
    from ppssld.arch.weights import resolve_params_path
    from ppssld.utils.errors import WeightsError

    def missing(value: Any) -> bool:
        if not isinstance(value, str) or not value:
            return False
        try:
            resolve_params_path(value)
        except WeightsError:
            return True
        return False

    arch = config.get("Arch") or {}
    found = []
    holders = [arch] + [cfg for item in (arch.get("models") or []) if isinstance(item, dict)
                        for cfg in item.values() if isinstance(cfg, dict)]
    for holder in holders:
        if missing(holder.get("pretrained")):
            found.append(holder["pretrained"])
            holder["pretrained"] = True
    listed = arch.get("pretrained_list")
    for i, value in enumerate(listed if isinstance(listed, list) else []):
        if missing(value):
            found.append(value)
            listed[i] = True
    return found


def _patch_weights(config: Dict[str, Any], folder: str) -> int:
    """Replace ``pretrained: True`` (a download); returns how many were replaced."""
    import paddle

    from ppssld.arch.build import build_model

    arch = config.get("Arch") or {}
    count = 0
    if arch.get("pretrained") is True:
        arch["pretrained"] = False
        count += 1
    if arch.get("name") != "DistillationModel" or not isinstance(arch.get("models"), list):
        return count
    frozen = arch.get("freeze_params_list") or [False] * len(arch["models"])
    listed = arch.get("pretrained_list") or [None] * len(arch["models"])
    for i, item in enumerate(arch["models"]):
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (key, cfg), = item.items()
        if isinstance(cfg, dict) and cfg.get("name") == "AttentionModel":  # AFD: a backbone inside
            for sub in cfg.get("models") or []:
                for sub_cfg in (sub.values() if isinstance(sub, dict) else []):
                    if isinstance(sub_cfg, dict) and sub_cfg.get("pretrained") is True:
                        sub_cfg["pretrained"] = False
                        count += 1
            continue
        if not isinstance(cfg, dict):
            continue
        is_frozen = i < len(frozen) and bool(frozen[i])
        weightless = (is_frozen and not cfg.get("pretrained") and not listed[i]
                      and not (config.get("Global") or {}).get("pretrained_model"))
        if cfg.get("pretrained") is not True and listed[i] is not True and not weightless:
            continue
        count += 1
        if isinstance(arch.get("pretrained_list"), list) and listed[i] is True:
            arch["pretrained_list"][i] = None
        if is_frozen:
            cfg["pretrained"] = False
            layer = build_model(arch, only=key, load_pretrained=False)
            path = os.path.join(folder, f"{key}_random.pdparams")
            paddle.save(layer.state_dict(), path)
            del layer
            cfg["pretrained"] = path
        else:
            cfg["pretrained"] = False
    return count


def _is_search_file(path: str) -> bool:
    """A PaddleClas ``search.yaml`` (tools/search_strategy.py input), told by its top-level keys."""
    from ppssld.utils.config import safe_load
    from ppssld.recipes.search import FILE_KEYS

    with open(path, "r", encoding="utf-8") as handle:
        raw = safe_load(handle)
    return isinstance(raw, dict) and "search_dict" in raw and set(raw) <= set(FILE_KEYS)


def _prepare(config: Dict[str, Any], tmp: str, data: Dict[str, str]) -> int:
    """The in-memory patches of every measured config (cpu data, output, weights); returns ``substituted``."""
    config.setdefault("Global", {}).update({"output_dir": os.path.join(tmp, "out"), "epochs": 1,
                                            "eval_during_train": False, "use_visualdl": False,
                                            "print_batch_step": 1})
    _patch_data(config, data)
    return _patch_weights(config, tmp)


def _run_search(path: str, tmp: str, result: Dict[str, Any]) -> None:
    """A search file: plan it (:mod:`ppssld.recipes.search`), build every trial in PaddleClas's order (each stage
    keeping its first value, as in a dry run), train one step of the first trial. The final distillation
    trial's teacher weights (a teacher trial's best_model) do not exist here: random ones stand in."""
    from ppssld.engine.builder import build_trainer, validate
    from ppssld.recipes.search import load_search, run_search

    plan = load_search(path)
    data = _make_images(tmp)
    result.update(distillation=plan.algorithm is not None, substituted=0, trials=0)

    def evaluate(trial) -> float:
        result["stage"] = f"trial {result['trials'] + 1} ({trial.stage})"
        config = trial.load(["Global.device=cpu"])
        validate(config)
        if trial.stage == "final":
            for item in (config.get("Arch") or {}).get("models") or []:
                if isinstance(item, dict) and isinstance(item.get("Teacher"), dict):
                    item["Teacher"]["pretrained"] = None
        result["substituted"] += _prepare(config, tmp, data)
        trainer = build_trainer(config)
        if result["trials"] == 0:
            result["loss"] = float(trainer.train_one_epoch(1)["loss"])
        result["trials"] += 1
        return 0.0

    run_search(plan, evaluate)
    result["stage"] = "search"
    result["status"] = "ok"


def run_one(base: str, rel: str) -> Dict[str, Any]:
    """Load, validate, build and (DistillationModel) train one step; the outcome as a dict."""
    import gc

    from ppssld.utils.config import load_config
    from ppssld.engine.builder import build_trainer, validate
    from ppssld.utils.errors import ConfigError, DataError, WeightsError

    result: Dict[str, Any] = {"config": rel, "group": group_of(rel), "stage": "load"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ppssld-cfg-") as tmp:
        try:
            if _is_search_file(os.path.join(base, rel)):
                _run_search(os.path.join(base, rel), tmp, result)
                result["seconds"] = round(time.perf_counter() - start, 2)
                return result
            config = load_config(os.path.join(base, rel), ["Global.device=cpu"])
            config = copy.deepcopy(config)
            distill = (config.get("Arch") or {}).get("name") == "DistillationModel"
            result["distillation"] = distill
            result["stage"] = "validate"
            validate(config)
            result["stage"] = "build"
            result["missing_weights"] = _missing_paths(config)
            result["substituted"] = _prepare(config, tmp, _make_images(tmp))
            trainer = build_trainer(config)
            if distill or result["group"] == "PULC":
                result["stage"] = "step"
                parts = trainer.train_one_epoch(1)
                result["loss"] = float(parts["loss"])
                if result["group"] == "PULC" and trainer.eval_loader is not None:
                    result["stage"] = "eval"
                    trainer._evaluate(1)
            result["status"] = "ok"
        except (ConfigError, DataError, WeightsError) as exc:
            result.update(status="refused", error_type=type(exc).__name__, reason=_first_line(str(exc)))
        except Exception as exc:  # noqa: BLE001 - the benchmark records every crash class, it does not stop
            result.update(status="crash", error_type=type(exc).__name__, reason=_first_line(str(exc)))
        finally:
            trainer = None
            gc.collect()
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _first_line(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:400]


def worker(base: str) -> None:
    """Read config paths on stdin, write one JSON result per line to the original stdout."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by paddle or the models goes to the log, not the protocol
    import ppssld  # noqa: F401  (thread settings before paddle)
    from ppssld.utils.logger import setup_logging

    setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    for line in sys.stdin:
        rel = line.strip()
        if rel:
            out.write(json.dumps(run_one(base, rel)) + "\n")


# ---- parent side (no paddle) -----------------------------------------------------------------------

class Worker:
    """A worker subprocess; ``ask`` returns its result or None after ``timeout`` seconds (then it is killed)."""

    def __init__(self, base: str, log) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--paddleclas-dir",
                                      os.path.dirname(os.path.dirname(base))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                     bufsize=1, cwd=ROOT)

    def ask(self, rel: str, timeout: float) -> Optional[Dict[str, Any]]:
        self.proc.stdin.write(rel + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _trains(path: str) -> bool:
    """Whether the config gets a training step (a DistillationModel, or any PULC config)."""
    if f"{os.sep}PULC{os.sep}" in path:
        return True
    with open(path, "r", encoding="utf-8") as handle:
        return bool(re.search(r"^\s*name:\s*[\"']?DistillationModel", handle.read(), re.M))


def measure(base: str, configs: List[str], timeout: float, log_path: str) -> List[Dict[str, Any]]:
    """Run every config; a timeout or a dead worker is recorded and the worker restarted."""
    results = []
    with open(log_path, "a", encoding="utf-8") as log:
        work = None
        for n, rel in enumerate(configs, start=1):
            work = work or Worker(base, log)
            limit = timeout * (3 if _trains(os.path.join(base, rel)) else 1)
            start = time.perf_counter()
            res = work.ask(rel, limit)
            if res is None:
                alive = work.proc.poll() is None
                work.stop()
                work = None
                res = {"config": rel, "group": group_of(rel), "stage": "?", "seconds": round(time.perf_counter()
                                                                                            - start, 2)}
                res.update(status="timeout", reason=f"over {limit:.0f} s") if alive else res.update(
                    status="crash", error_type="WorkerDied", reason="the worker process died (see the log)")
            results.append(res)
            print(f"[{n}/{len(configs)}] {res['status']:8s} {res['seconds']:7.1f}s {rel}"
                  + (f"  ({res.get('reason', '')[:120]})" if res["status"] != "ok" else ""), flush=True)
        if work is not None:
            work.stop()
    return results


def summarize(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Counts per group and status (ImageNet also with its Distillation folder, PULC's distillation
    configs apart), and the reasons for not ok, by kind and by exact cause."""
    counts: Dict[str, Dict[str, int]] = collections.OrderedDict()
    for res in sorted(results, key=lambda r: r["group"]):
        groups = [res["group"]]
        if res["group"].startswith("ImageNet"):
            groups.append("ImageNet (all, with Distillation)")
        if res.get("distillation") and res["group"] == "PULC":
            groups.append("PULC (DistillationModel)")
        for group in groups:
            row = counts.setdefault(group, collections.Counter())
            row[res["status"]] += 1
            row["total"] += 1
    bad = [r for r in results if r["status"] != "ok"]
    kinds = collections.Counter(_reason(r, blur=True) for r in bad)
    causes = collections.Counter(_reason(r, blur=False) for r in bad)
    return {"counts": {k: dict(v) for k, v in counts.items()}, "kinds": kinds.most_common(),
            "causes": causes.most_common()}


def _reason(res: Dict[str, Any], blur: bool) -> str:
    """The reason's first sentence without config-specific parts (file, indices); ``blur`` also hides names."""
    if res["status"] == "timeout":
        return "timeout"
    text = res.get("reason", "")
    text = re.sub(r"^\S+\.ya?ml: ", "", text)
    text = re.sub(r"Did you mean .*", "", text)
    text = re.sub(r"(Supported ops|Valid [\w ]+?): .*", "", text)
    text = re.sub(r" at (Loss|Metric)\.\w+\[\d+\]\.\w+", r" in \1", text)
    text = re.sub(r"\[\d+\]", "[i]", text)
    text = re.sub(r"backbone '[^']*' at Arch rejected its arguments \[[^]]*\]: ", "backbone rejected: ", text)
    if blur:
        text = re.sub(r"'[^']*'", "X", text)
        text = re.sub(r"\b(DLA|RedNet|HarDNet)\.__init__", "Backbone.__init__", text)
    text = text.split("; ")[0].strip().rstrip(".")
    return f"{res['status']}: {text}"


def markdown(results: List[Dict[str, Any]], summary: Dict[str, Any]) -> str:
    """The report: counts per group, the reasons, then one row per config."""
    lines = ["## Counts", "", "| group | configs | ok | refused | crash | timeout |", "|---|---|---|---|---|---|"]
    for group, row in summary["counts"].items():
        lines.append(f"| {group} | {row['total']} | {row.get('ok', 0)} | {row.get('refused', 0)} | "
                     f"{row.get('crash', 0)} | {row.get('timeout', 0)} |")
    lines += ["", "ok = built (model, loss, optimizer, train and eval data pipelines); for a DistillationModel, "
              "built and trained one step; for a PULC config, built, trained one step and evaluated; for a PULC "
              "search.yaml, every trial (ppssld.recipes.search, PaddleClas's order) built and the first trained one step.",
              "", "## Why not ok, by kind", "", "| configs | reason |", "|---|---|"]
    lines += [f"| {n} | {reason.replace('|', '/')} |" for reason, n in summary["kinds"]]
    lines += ["", "## Why not ok, by cause", "", "| configs | reason |", "|---|---|"]
    lines += [f"| {n} | {reason.replace('|', '/')} |" for reason, n in summary["causes"]]
    lines += ["", "## Every config", "", "| config | status | stage | s | reason |", "|---|---|---|---|---|"]
    for res in results:
        reason = res.get("reason", "") if res["status"] != "ok" else (
            f"loss {res['loss']:.4f}" if "loss" in res else "")
        missing = res.get("missing_weights") or []
        if res.get("substituted", 0) > len(missing):
            reason += f" ({res['substituted'] - len(missing)} pretrained: True replaced)"
        if missing:
            reason += f" (weights path{'s' if len(missing) > 1 else ''} not on disk, random weights instead: " \
                      f"{', '.join(missing)})"
        lines.append(f"| {res['config']} | {res['status']} | {res.get('stage', '')} | {res['seconds']} | "
                     f"{reason.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def rewrite_report() -> None:
    """Regenerate the markdown (and the summary) from the committed JSON, keeping its command and date."""
    from ppssld.utils.io import atomic_write_json, atomic_write_text

    path = os.path.join(results_dir(__file__), RESULT_NAME)
    with open(path + ".json", "r", encoding="utf-8") as handle:
        payload = json.load(handle)
    payload["summary"] = summarize(payload["results"])
    atomic_write_json(path + ".json", payload)
    with open(path + ".md", "r", encoding="utf-8") as handle:
        head = handle.read().split("## Counts", 1)[0]
    atomic_write_text(path + ".md", head + markdown(payload["results"], payload["summary"]))


def main() -> None:
    """Parse arguments, measure, write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paddleclas-dir", required=True, help="a PaddleClas checkout (its ppcls/configs is read)")
    p.add_argument("--only", default=None, help="only configs whose path contains this string")
    p.add_argument("--limit", type=int, default=None, help="only the first N configs (after --only)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds per config (x3 for a training step)")
    p.add_argument("--merge", action="store_true", help="add to (replace rows of) the existing results")
    p.add_argument("--report-only", action="store_true", help="rewrite the .md from the existing .json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    base = os.path.join(os.path.abspath(args.paddleclas_dir), "ppcls", "configs")
    if args.worker:
        worker(base)
        return
    if args.report_only:
        rewrite_report()
        return
    configs = list_configs(os.path.abspath(args.paddleclas_dir))
    if args.only:
        configs = [c for c in configs if args.only in c]
    configs = configs[:args.limit] if args.limit else configs
    folder = results_dir(__file__)
    start = time.perf_counter()
    results = measure(base, configs, args.timeout, os.path.join(tempfile.gettempdir(), "paddleclas_configs.log"))
    previous = os.path.join(folder, RESULT_NAME + ".json")
    if args.merge and os.path.isfile(previous):
        with open(previous, "r", encoding="utf-8") as handle:
            old = {r["config"]: r for r in json.load(handle)["results"]}
        old.update({r["config"]: r for r in results})
        results = [old[k] for k in sorted(old)]
    summary = summarize(results)
    write_results(RESULT_NAME, {"seconds": round(time.perf_counter() - start, 1), "timeout_s": args.timeout,
                                "summary": summary, "results": results}, markdown(results, summary), folder)
    for group, row in summary["counts"].items():
        print(f"{group}: {row.get('ok', 0)} of {row['total']} ok, {row.get('refused', 0)} refused, "
              f"{row.get('crash', 0)} crash, {row.get('timeout', 0)} timeout")


if __name__ == "__main__":
    main()
