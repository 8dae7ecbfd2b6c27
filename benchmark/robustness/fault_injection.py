"""Fault injection: ``kill -9`` at random moments of training, mining, the pipeline, soft-label cache
generation, the teacher engine's conversion and training from a cache; a full disk during generation.

Every trial starts a fresh run, kills it (SIGKILL) at a random moment of an uninterrupted run's
duration, resumes it as a user would (training: ``-o Global.checkpoints=<dir>/latest`` when a
``latest`` exists; mining and the pipeline: the same command again) and checks that

* the final student weights equal the uninterrupted run's (training and pipeline: max |diff|),
* the selected list is byte-identical (mining and pipeline),
* every ``.pdparams/.pdopt/.pdstates/.json`` left in the output loads and no temporary file remains.

Training saves are slowed (``--save-delay`` seconds after each file written, through a patched
``paddle.save`` in the worker process only) so that kills land inside checkpoint writes; a kill
counts as "during a save" when it leaves a save's temporary file behind.

The ``cache``, ``engine`` and ``disk`` parts live in ``fault_injection_cache.py``; ``reader`` is the training
trial with ``-o Global.soft_label_cache=<a cache>``.

Usage: flock /tmp/ppssld-heavy.lock python benchmark/robustness/fault_injection.py [--train 10 --mine 5 --pipeline 5]
    [--cache 5 --engine 5 --reader 5 --disk 5] [--parts cache,engine,reader,disk]
"""
import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark.common import ROOT, results_dir, write_results  # noqa: E402

QS = os.path.join(ROOT, "ppcls_configs", "quick_start", "fashion_mnist")
PY = sys.executable
TOLERANCE = 1e-6


def worker() -> None:
    """Run a tool (argv after ``--worker``) with slow checkpoint writes, in this process."""
    import runpy

    import paddle

    delay = float(os.environ.get("FAULT_SAVE_DELAY", "0"))
    real_save = paddle.save

    def slow_save(obj: Any, path: str, *args: Any, **kwargs: Any) -> None:
        real_save(obj, path, *args, **kwargs)
        time.sleep(delay)

    paddle.save = slow_save
    script = sys.argv[sys.argv.index("--worker") + 1]
    sys.argv = [script] + sys.argv[sys.argv.index("--worker") + 2:]
    runpy.run_path(script, run_name="__main__")


def _env() -> Dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")


def _run(cmd: List[str], log: str, kill_after: Optional[float] = None, delay: float = 0.0,
         save_dir: Optional[str] = None, nth_save: int = 0) -> Dict[str, Any]:
    """Run ``cmd``; SIGKILL it after ``kill_after`` seconds or, with ``save_dir`` and ``nth_save``,
    at a random moment inside its ``nth_save``-th checkpoint save (seen by the save's temporaries).

    Returns:
        ``rc``, ``killed``, ``wall``.
    """
    env = dict(_env(), FAULT_SAVE_DELAY=str(delay))
    tic = time.time()
    with open(log, "a", encoding="utf-8") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        killed = False
        if nth_save and save_dir:
            seen: set = set()
            while proc.poll() is None:
                seen.update(_temporaries(save_dir))
                if len(seen) >= 3 * nth_save:  # a save writes three temporaries at once
                    time.sleep(random.uniform(0.0, 2.5 * delay))
                    break
                time.sleep(0.01)
            kill_after = 0.0
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
    return {"rc": proc.returncode, "killed": killed, "wall": time.time() - tic}


def _temporaries(folder: str) -> List[str]:
    return [p for p in glob.glob(os.path.join(folder, "**", ".*.tmp"), recursive=True)]


def _check_files(folder: str) -> List[str]:
    """Files under ``folder`` that do not load (temporaries, hidden ``.*.tmp``, are counted apart)."""
    import paddle

    bad = []
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        try:
            if path.endswith((".pdparams", ".pdopt", ".pdstates")):
                paddle.load(path)
            elif path.endswith(".json"):
                with open(path, encoding="utf-8") as handle:
                    json.load(handle)
            elif path.endswith(".npz"):
                with np.load(path) as arrays:
                    [arrays[name] for name in arrays.files]
        except Exception as exc:  # noqa: BLE001 - any failure to load is what we count
            bad.append(f"{path}: {type(exc).__name__}: {exc}")
    return bad


def _weights(path: str) -> Dict[str, np.ndarray]:
    import paddle

    return {k: v.numpy() for k, v in paddle.load(path).items() if k.startswith("Student.")}


def _max_diff(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


class Bench:
    """Data, configs and the three kinds of trial."""

    def __init__(self, work: str, seed: int, save_delay: float) -> None:
        self.work, self.rng, self.save_delay = work, random.Random(seed), save_delay
        self.data = os.path.join(work, "data")
        self.log = os.path.join(work, "runs.log")
        self.teacher = os.path.join(work, "teacher.pdparams")

    def prepare(self) -> None:
        os.makedirs(self.work, exist_ok=True)
        subprocess.run([PY, os.path.join(ROOT, "tools", "prepare_data.py"), "--dataset", "digits", "--out",
                        self.data, "--labeled", "300", "--unlabeled", "600"], check=True, env=_env(),
                       capture_output=True)
        import paddle

        from ppssld.arch.zoo import build_backbone

        paddle.seed(0)
        paddle.save(build_backbone("ResNet18", class_num=10).state_dict(), self.teacher)

    def _data_overrides(self) -> List[str]:
        d = self.data
        return [f"DataLoader.Train.dataset.image_root={d}/images", f"DataLoader.Eval.dataset.image_root={d}/images",
                f"DataLoader.Train.dataset.cls_label_path={d}/train_list.txt",
                f"DataLoader.Train.dataset.unlabeled_label_path={d}/unlabeled_list.txt",
                f"DataLoader.Eval.dataset.cls_label_path={d}/val_list.txt", f"Global.class_names={d}/label_list.txt"]

    @staticmethod
    def _fast() -> List[str]:
        return ["DataLoader.Train.sampler.batch_size=64", "DataLoader.Train.loader.num_workers=0",
                "DataLoader.Eval.loader.num_workers=0", "Global.print_batch_step=100", "Global.save_interval=1"]

    # -- training ------------------------------------------------------------------------------
    def train_cmd(self, out: str, resume: bool, extra: Sequence[str] = ()) -> List[str]:
        cmd = [PY, __file__, "--worker", os.path.join(ROOT, "tools", "train.py"), "-c",
               os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"), "-o", f"Global.output_dir={out}",
               f"Arch.models.Teacher.pretrained={self.teacher}", "Global.epochs=2"] + self._fast() + \
            self._data_overrides() + list(extra)
        latest = os.path.join(out, "DistillationModel", "latest.pdparams")
        if resume and os.path.isfile(latest):
            cmd += [f"Global.checkpoints={latest}"]
        return cmd

    def train_trial(self, out: str, kill_at: float, nth_save: int = 0, extra: Sequence[str] = ()) -> Dict[str, Any]:
        ckpt = os.path.join(out, "DistillationModel")
        first = _run(self.train_cmd(out, False, extra), self.log, kill_after=kill_at, delay=self.save_delay,
                     save_dir=ckpt, nth_save=nth_save)
        in_save = bool(_temporaries(ckpt)) if first["killed"] else False
        runs = 1
        while True:
            runs += 1
            done = _run(self.train_cmd(out, True, extra), self.log, delay=self.save_delay)
            if done["rc"] == 0 or runs > 3:
                break
        moment = {"kill_in_save_n": nth_save} if nth_save else {"kill_at_s": round(kill_at, 2)}
        return {"killed": first["killed"], **moment, "during_save": in_save, "resumed_rc": done["rc"],
                "resumes": runs - 1, "final": os.path.join(ckpt, "latest.pdparams"), "folder": out}

    # -- mining --------------------------------------------------------------------------------
    def mine_cmd(self, out: str) -> List[str]:
        d = self.data
        return [PY, os.path.join(ROOT, "tools", "select_unlabeled.py"), "-c",
                os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"), "-o", f"Arch.models.Teacher.pretrained={self.teacher}",
                f"Global.class_names={d}/label_list.txt", "--pool", f"{d}/unlabeled_list.txt", "--image-root",
                f"{d}/images", "--eval-list", f"{d}/val_list.txt", "--k", "20", "--out", out, "--chunk-size", "64",
                "--batch-size", "32"]

    def mine_trial(self, out: str, kill_at: float) -> Dict[str, Any]:
        first = _run(self.mine_cmd(out), self.log, kill_after=kill_at)
        chunks = len(glob.glob(os.path.join(out, "scores", "chunk_*.npz")))
        done = _run(self.mine_cmd(out), self.log)
        return {"killed": first["killed"], "kill_at_s": round(kill_at, 2), "chunks_scored_at_kill": chunks,
                "resumed_rc": done["rc"],
                "final": os.path.join(out, "selected_list.txt"), "folder": out}

    # -- pipeline ------------------------------------------------------------------------------
    def pipeline_cmd(self, out: str) -> List[str]:
        import yaml

        fast = ["Global.epochs=2", "DataLoader.Train.sampler.batch_size=64", "DataLoader.Train.loader.num_workers=0",
                "DataLoader.Eval.loader.num_workers=0", "Global.print_batch_step=100", "Global.save_interval=1"]
        cfg = {"output_dir": out, "data": {"dataset": "digits", "labeled": 300, "unlabeled": 600, "seed": 0},
               "teacher": {"pretrained": self.teacher}, "mine": {"k": 20, "batch_size": 32},
               "distill": {"config": os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"), "overrides": fast},
               "export": {"enabled": False}}
        path = out + ".yaml"
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(cfg, handle)
        return [PY, __file__, "--worker", os.path.join(ROOT, "tools", "ssld_pipeline.py"), "-c", path]

    def pipeline_trial(self, out: str, kill_at: float) -> Dict[str, Any]:
        first = _run(self.pipeline_cmd(out), self.log, kill_after=kill_at, delay=self.save_delay)
        in_save = bool(_temporaries(os.path.join(out, "distill"))) if first["killed"] else False
        running = [s for s in ("data", "teacher", "mine", "distill")
                   if os.path.isfile(os.path.join(out, s, "fingerprint.json"))
                   and not os.path.isfile(os.path.join(out, s, "stage.json"))]
        done = _run(self.pipeline_cmd(out), self.log, delay=self.save_delay)
        return {"killed": first["killed"], "kill_at_s": round(kill_at, 2), "stage_at_kill": running[0] if running
                else "start-up", "during_save": in_save,
                "resumed_rc": done["rc"], "final": os.path.join(out, "distill", "DistillationModel", "latest.pdparams"),
                "selected": os.path.join(out, "mine", "selected_list.txt"), "folder": out}


def _judge(trial: Dict[str, Any], reference: Dict[str, Any], kind: str) -> Dict[str, Any]:
    """Compare a trial's outputs with the reference run's; fill ``diff``, ``same_list``, ``bad_files``, ``ok``."""
    trial["bad_files"] = _check_files(trial["folder"])
    trial["temporaries_left"] = [os.path.relpath(p, trial["folder"]) for p in _temporaries(trial["folder"])]
    if kind in ("train", "reader", "pipeline"):
        trial["diff"] = (_max_diff(_weights(trial["final"]), _weights(reference["final"]))
                         if os.path.isfile(trial["final"]) else float("inf"))
    if kind in ("mine", "pipeline"):
        mine = trial["final"] if kind == "mine" else trial["selected"]
        ref = reference["final"] if kind == "mine" else reference["selected"]
        trial["same_list"] = os.path.isfile(mine) and open(mine, "rb").read() == open(ref, "rb").read()
    trial["ok"] = (trial["resumed_rc"] == 0 and not trial["bad_files"] and trial.get("diff", 0.0) <= TOLERANCE
                   and trial.get("same_list", True))
    return trial


PARTS = ("train", "mine", "pipeline", "cache", "engine", "reader", "disk")
KILL_PARTS = ("train", "mine", "pipeline", "reader")  # the parts this file's trial loop runs


def kill_part(bench: Bench, kind: str, count: int, work: str, save_delay: float,
              cache: Optional[str] = None) -> Dict[str, Any]:
    """``count`` trials of a training, mining, pipeline or reader (training from ``cache``) part."""
    extra = [f"Global.soft_label_cache={cache}"] if kind == "reader" else []
    trains = kind in ("train", "reader")
    make_cmd = {"mine": bench.mine_cmd, "pipeline": bench.pipeline_cmd}.get(kind)
    trial_fn = {"mine": bench.mine_trial, "pipeline": bench.pipeline_trial}.get(kind)
    ref_out = os.path.join(work, f"{kind}_reference")
    cmd = bench.train_cmd(ref_out, False, extra) if trains else make_cmd(ref_out)
    ref_run = _run(cmd, bench.log, delay=save_delay if kind != "mine" else 0.0)
    if ref_run["rc"] != 0:
        raise SystemExit(f"the uninterrupted {kind} run failed; see {bench.log}")
    reference = {"final": os.path.join(ref_out, "DistillationModel", "latest.pdparams") if trains else
                 os.path.join(ref_out, "selected_list.txt") if kind == "mine" else
                 os.path.join(ref_out, "distill", "DistillationModel", "latest.pdparams"),
                 "selected": os.path.join(ref_out, "mine", "selected_list.txt")}
    trials = []
    for i in range(count):
        kill_at = bench.rng.uniform(0.05, 0.95) * ref_run["wall"]
        folder = os.path.join(work, f"{kind}_{i}")
        if trains:  # every other training trial is killed inside a save
            trial = bench.train_trial(folder, kill_at, nth_save=bench.rng.randint(1, 6) if i % 2 else 0, extra=extra)
        else:
            trial = trial_fn(folder, kill_at)
        trial = _judge(trial, reference, kind)
        trials.append({k: v for k, v in trial.items() if k not in ("final", "selected", "folder")})
        print(f"{kind} {i}: {trials[-1]}", flush=True)
    return {"reference_wall_s": round(ref_run["wall"], 1), "trials": trials,
            "kills": sum(t["killed"] for t in trials),
            "kills_during_saves": sum(bool(t.get("during_save")) for t in trials),
            "mismatches": sum(not t["ok"] for t in trials),
            "temporaries_left": sum(len(t["temporaries_left"]) for t in trials),
            "max_weight_diff": max((t["diff"] for t in trials if "diff" in t), default=None)}


def main() -> None:
    if "--worker" in sys.argv:
        worker()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for part, count, what in (("train", 10, "training"), ("mine", 5, "mining"), ("pipeline", 5, "the pipeline"),
                              ("cache", 5, "soft-label cache generation"), ("engine", 5, "the teacher engine's "
                              "conversion"), ("reader", 5, "training from a soft-label cache"),
                              ("disk", 5, "cache generation onto a full disk")):
        parser.add_argument(f"--{part}", type=int, default=count, help=f"trials of {what} (default {count})")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which parts run (default: all, {','.join(PARTS)})")
    parser.add_argument("--save-delay", type=float, default=0.15, help="seconds slept after each file a save writes")
    parser.add_argument("--write-delay", type=float, default=0.1,
                        help="seconds slept halfway through each cache chunk file's write (mid-chunk kills)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/ppssld_fault_injection")
    parser.add_argument("--no-write", action="store_true", help="print, do not write benchmark/results")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {','.join(PARTS)}")
    counts = {p: getattr(args, p) if p in parts else 0 for p in PARTS}
    if os.path.isdir(args.work):
        shutil.rmtree(args.work)
    random.seed(args.seed)
    bench = Bench(args.work, args.seed, args.save_delay)
    tic = time.time()
    bench.prepare()
    summary: Dict[str, Any] = {}
    cache_summary: Dict[str, Any] = {}
    cache = None
    if counts["cache"] or counts["engine"] or counts["disk"] or counts["reader"]:
        from benchmark.robustness.fault_injection_cache import run_parts

        cache_summary, cache = run_parts(bench, counts, args.seed, args.write_delay)
    for kind in KILL_PARTS:
        if counts[kind] > 0:
            summary[kind] = kill_part(bench, kind, counts[kind], args.work, args.save_delay, cache)
    wall = time.time() - tic
    print(json.dumps(totals(summary, cache_summary, wall)))
    if not args.no_write:
        write(*carried(summary, cache_summary, parts), wall, args)


def totals(summary: Dict[str, Any], cache_summary: Dict[str, Any], wall: float) -> Dict[str, Any]:
    every = list(summary.values()) + list(cache_summary.values())
    return {"kills": sum(s["kills"] for s in every),
            "kills_during_saves": sum(s["kills_during_saves"] for s in summary.values()),
            "mismatches": sum(s["mismatches"] for s in every),
            "temporaries_left": sum(s["temporaries_left"] for s in every), "wall_s": round(wall, 1)}


def carried(summary: Dict[str, Any], cache_summary: Dict[str, Any], parts: List[str]) -> Tuple[Dict, Dict, List]:
    """With ``--parts`` a subset: the other parts' summaries from the results file written before (each marked
    with that run's date and command), so the results keep every part."""
    path = os.path.join(results_dir(__file__), "fault_injection.json")
    if set(parts) >= set(PARTS) or not os.path.isfile(path):
        return summary, cache_summary, []
    with open(path, encoding="utf-8") as handle:
        old = json.load(handle)
    kept = []
    for kind in PARTS:
        if kind not in parts and kind in old.get("summary", {}):
            part = old["summary"][kind]
            part.setdefault("from_run", {"date": old["date"], "command": old["command"],
                                         "machine": old["machine"]["cpu"], "git_commit": old["machine"]["git_commit"]})
            (summary if kind in KILL_PARTS else cache_summary)[kind] = part
            kept.append(f"{kind} ({part['from_run']['date']}, {part['from_run']['machine']})")
    order = {k: i for i, k in enumerate(PARTS)}
    return (dict(sorted(summary.items(), key=lambda kv: order[kv[0]])),
            dict(sorted(cache_summary.items(), key=lambda kv: order[kv[0]])), kept)


def write(summary: Dict[str, Any], cache_summary: Dict[str, Any], kept: List[str], wall: float, args: Any) -> None:
    """``benchmark/results/robustness/fault_injection.{md,json}``."""
    from benchmark.robustness.fault_injection_cache import markdown as cache_markdown

    total = totals(summary, cache_summary, wall)

    where = {kind: sorted({str(t.get("stage_at_kill", t.get("chunks_scored_at_kill", ""))) for t in s["trials"]})
             for kind, s in summary.items()}
    rows = ["| part | trials | kills | kills during saves | mismatches | max weight diff | temporaries left | "
            "reference run |", "|---|---|---|---|---|---|---|---|"]
    for kind, s in summary.items():
        diff = "n/a (list compared)" if s["max_weight_diff"] is None else f"{s['max_weight_diff']:.2e}"
        rows.append(f"| {kind} | {len(s['trials'])} | {s['kills']} | {s['kills_during_saves']} | {s['mismatches']} | "
                    f"{diff} | {s['temporaries_left']} | {s['reference_wall_s']} s |")
    disk = sum(len(s["trials"]) for k, s in cache_summary.items() if k == "disk")
    markdown = (
        "# Fault injection: kill -9 at random moments, then resume\n\n"
        f"Total: **{total['kills']} kills ({total['kills_during_saves']} inside checkpoint saves) and {disk} full "
        f"disks, {total['mismatches']} mismatches, {total['temporaries_left']} temporaries left**; whole "
        f"benchmark {total['wall_s']} s (this run). Parts run now: {args.parts}"
        + (f"; kept from the results written before: {', '.join(kept)}" if kept else "") + ".\n\n"
        "## Training, mining, pipeline, training from a cache\n\n"
        + "\n".join(rows) + "\n\n"
        "Each trial: a fresh run on the scikit-learn digits (300 labeled + 600 unlabeled 8x8 images, ResNet18 "
        "random teacher -> MobileNetV3_small_x0_35, 2 epochs, a checkpoint "
        "every epoch), SIGKILL after a random fraction (5-95%) of the uninterrupted run's wall time (every "
        "other training trial: at a random moment inside its n-th checkpoint save, n drawn from 1-6 of the 6-8 "
        "saves a run makes), then the "
        "same command again (training: with `-o Global.checkpoints=<dir>/latest` when it exists). The reader "
        "part is the training trial with `-o Global.soft_label_cache=<the cache part's uninterrupted cache>` "
        "(the teacher never built: the soft labels are read from the memory-mapped chunks). "
        f"A trial matches when the resumed run exits 0, the final student weights differ from the uninterrupted "
        f"run's by at most {TOLERANCE:g} (max |diff| over all student tensors), the selected list is "
        "byte-identical and every .pdparams/.pdopt/.pdstates/.json/.npz left in the output loads. Temporaries "
        "(hidden `.<name>.*.tmp` files a kill left; never read) are counted apart. "
        f"Saves were slowed by {args.save_delay} s after each file (a patched `paddle.save` in the killed process "
        "only) so that kills land inside them; a kill counts as during a save when it left a save's temporary "
        "file (the next save of that tag removes it). The killed and resumed processes ran with OMP_NUM_THREADS=1 "
        f"(the line above is the benchmark's own process). Pipeline kills landed in stages {where.get('pipeline')}; "
        f"mining kills after {where.get('mine')} score chunks (of 10) were written.\n\n"
        + cache_markdown(cache_summary, args.write_delay)
        + "Per-trial details: `fault_injection.json`.\n")
    write_results("fault_injection", {"summary": {**summary, **cache_summary}, "total": total,
                                      "save_delay_s": args.save_delay, "write_delay_s": args.write_delay,
                                      "seed": args.seed, "tolerance": TOLERANCE}, markdown, results_dir(__file__))


if __name__ == "__main__":
    main()
