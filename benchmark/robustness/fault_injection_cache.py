"""The soft-label cache parts of ``benchmark/robustness/fault_injection.py``: ``kill -9`` inside cache generation (at
random moments and inside a chunk file's write), inside the teacher engine's conversion (``paddle.jit.save``
into the engine store, and the ONNX conversion), and a full disk during generation.

Every trial re-runs the same command and compares with an uninterrupted run: chunk files byte for byte,
the manifest as parsed JSON (it holds no timing field), ``tools/cache_soft_labels.py --verify`` status 0, no
temporary file left. Training from a cache (the reader) is the ``reader`` part of ``fault_injection.py``.

Run as ``python benchmark/robustness/fault_injection_cache.py --worker TOOL ARGS`` it is the killed process: TOOL runs
with ``FAULT_CHUNK_WRITE_DELAY`` seconds slept halfway through each chunk file's write (so that kills land
inside writes) and, without a small tmpfs to fill, ``FAULT_ENOSPC_AFTER_BYTES``: chunk bytes written before
a write fails with ENOSPC.
"""
import errno
import glob
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

if __package__ in (None, ""):  # run as a file (the killed worker): the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark.common import ROOT  # noqa: E402

PY = sys.executable
QS = os.path.join(ROOT, "ppcls_configs", "quick_start", "fashion_mnist", "ssld_R18_MV3_small_x0_35.yaml")
TOOL = os.path.join(ROOT, "tools", "cache_soft_labels.py")
PAGE = 4096


def worker() -> None:
    """Run TOOL (argv after ``--worker``) with the chunk-write patches of the environment."""
    import runpy

    import numpy as np

    delay = float(os.environ.get("FAULT_CHUNK_WRITE_DELAY", "0") or 0)
    budget = os.environ.get("FAULT_ENOSPC_AFTER_BYTES")
    left = {"bytes": None if budget is None else int(budget)}
    real_save = np.save

    def chunk_save(file: Any, array: Any, *args: Any, **kwargs: Any) -> None:
        if ".npy." not in str(getattr(file, "name", "")):  # only the cache's temporaries of chunk files
            real_save(file, array, *args, **kwargs)
            return
        buffer = io.BytesIO()
        real_save(buffer, array, *args, **kwargs)
        data = buffer.getvalue()
        if left["bytes"] is not None and left["bytes"] < len(data):
            file.write(data[: left["bytes"]])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if left["bytes"] is not None:
            left["bytes"] -= len(data)
        file.write(data[: len(data) // 2])
        file.flush()
        time.sleep(delay)
        file.write(data[len(data) // 2:])

    np.save = chunk_save
    script = sys.argv[sys.argv.index("--worker") + 1]
    sys.argv = [script] + sys.argv[sys.argv.index("--worker") + 2:]
    sys.path.insert(0, ROOT)
    runpy.run_path(script, run_name="__main__")


def _files(folder: str) -> Dict[str, Any]:
    """A cache folder's chunk files as bytes and its JSON files as parsed (the lock and temporaries left out)."""
    found: Dict[str, Any] = {}
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        name = os.path.basename(path)
        if os.path.isfile(path) and not name.startswith("."):
            with open(path, "rb") as handle:
                data = handle.read()
            found[os.path.relpath(path, folder)] = json.loads(data) if name.endswith(".json") else data
    return found


def temporaries(folder: str) -> List[str]:
    """Hidden temporaries under ``folder``: atomic writes' ``.<name>.*.tmp``, the engine store's ``.<key>.*``
    folders and ``teacher.onnx.*.tmp``."""
    found = [p for p in glob.glob(os.path.join(folder, "**", ".*"), recursive=True)
             if os.path.basename(p) != ".ppssld.lock"]
    found += glob.glob(os.path.join(folder, "**", "teacher.onnx.*.tmp"), recursive=True)
    return sorted(os.path.relpath(p, folder) for p in found)


def launch(cmd: List[str], log: str, env: Dict[str, str], trigger: Optional[Callable[[], Optional[float]]] = None,
           events: Optional[Dict[str, Callable[[], bool]]] = None) -> Dict[str, Any]:
    """Run ``cmd``; once ``trigger()`` returns a delay, SIGKILL it that many seconds later. ``events``: name ->
    condition, each polled every 10 ms; the first moment (s after the start) each held is returned in ``seen``.

    Returns:
        ``rc``, ``killed``, ``wall``, ``seen``, ``output`` (the run's stdout and stderr).
    """
    tic = time.time()
    seen: Dict[str, float] = {}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    chunks: List[bytes] = []
    import threading

    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(65536), b"")))
    reader.start()
    killed, kill_at = False, None
    while proc.poll() is None:
        now = time.time() - tic
        for name, held in (events or {}).items():
            if name not in seen and held():
                seen[name] = round(now, 3)
        if trigger is not None and kill_at is None:
            delay = trigger()
            if delay is not None:
                kill_at = now + delay
        if kill_at is not None and now >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    proc.wait()
    reader.join()
    output = b"".join(chunks).decode("utf-8", errors="replace")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(cmd)}\n{output}\n")
    return {"rc": proc.returncode, "killed": killed, "wall": time.time() - tic, "seen": seen, "output": output}


class CacheParts:
    """Data, commands and the three kinds of trial (``bench``: fault_injection's Bench, for data and teacher)."""

    def __init__(self, bench: Any, seed: int, write_delay: float) -> None:
        self.bench, self.rng, self.write_delay = bench, random.Random(seed + 1), write_delay
        self.work = bench.work
        self.store = os.path.join(self.work, "engine_store")  # a warm engine store for the cache and disk parts

    def env(self, store: Optional[str] = None, **extra: str) -> Dict[str, str]:
        return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python",
                    PPSSLD_CACHE_DIR=store or self.store, **extra)

    def cache_cmd(self, out: str, engine: str = "auto") -> List[str]:
        d = self.bench.data
        return [PY, os.path.abspath(__file__), "--worker", TOOL, "-c", QS, "-o",
                f"Arch.models.Teacher.pretrained={self.bench.teacher}", f"Global.class_names={d}/label_list.txt",
                f"DataLoader.Train.dataset.image_root={d}/images", f"DataLoader.Train.dataset.cls_label_path="
                f"{d}/train_list.txt", f"DataLoader.Train.dataset.unlabeled_label_path={d}/unlabeled_list.txt",
                f"Arch.teacher_engine={engine}", "--views", "2", "--topk", "10", "--dtype", "float32", "--out", out,
                "--chunk-size", "64", "--batch-size", "32"]

    def verify(self, out: str) -> bool:
        proc = subprocess.run([PY, TOOL, "--verify", out], capture_output=True, text=True, env=self.env(), cwd=ROOT)
        return proc.returncode == 0

    def reference(self, out: str, engine: str = "auto", store: Optional[str] = None) -> Dict[str, Any]:
        """An uninterrupted run, with the moments its chunks and engine files appeared."""
        store_dir = os.path.join(store or self.store, "teacher_engine")
        events = {"first_chunk": lambda: bool(glob.glob(os.path.join(out, "v0000", "c*.npy"))),
                  "manifest": lambda: os.path.isfile(os.path.join(out, "manifest.json")),
                  "save_tmp": lambda: bool(glob.glob(os.path.join(store_dir, ".*"))),
                  "saved": lambda: bool(glob.glob(os.path.join(store_dir, "[!.]*", "teacher.pdiparams"))),
                  "onnx_tmp": lambda: bool(glob.glob(os.path.join(store_dir, "*", "teacher.onnx.*.tmp"))),
                  "onnx": lambda: bool(glob.glob(os.path.join(store_dir, "*", "teacher.onnx")))}
        run = launch(self.cache_cmd(out, engine), self.bench.log, self.env(store), events=events)
        if run["rc"] != 0 or not self.verify(out):
            raise SystemExit(f"the uninterrupted cache run ({engine}) failed; see {self.bench.log}")
        return {**run, "files": _files(out)}

    def judge(self, out: str, reference: Dict[str, Any], resumed: Dict[str, Any]) -> Dict[str, Any]:
        files = _files(out)
        return {"resumed_rc": resumed["rc"], "same_files": files == reference["files"],
                "verify_ok": self.verify(out), "temporaries_left": temporaries(out),
                "removed_temporaries_logged": "temporary file(s) of an interrupted write" in resumed["output"]}

    # -- (a) cache generation ------------------------------------------------------------------
    def cache_trial(self, i: int, reference: Dict[str, Any]) -> Dict[str, Any]:
        out = os.path.join(self.work, f"cache_{i}")
        if i % 2:  # inside the n-th chunk file's write: kill while the slowed write sleeps halfway
            nth = self.rng.randint(1, 60)
            wait = self.rng.uniform(0.0, self.write_delay)
            seen: set = set()

            def trigger() -> Optional[float]:
                seen.update(glob.glob(os.path.join(out, "v*", ".*.tmp")))
                return wait if len(seen) >= nth else None
            moment: Dict[str, Any] = {"kill_in_chunk_file_n": nth}
        else:  # a random moment of generation (from its first chunk file to its manifest)
            span = reference["seen"]["manifest"] - reference["seen"]["first_chunk"]
            wait = self.rng.uniform(0.05, 0.95) * span

            def trigger() -> Optional[float]:
                return wait if glob.glob(os.path.join(out, "v0000", "c*.npy")) else None
            moment = {"kill_at_s_after_first_chunk": round(wait, 2)}
        slowed = self.env(FAULT_CHUNK_WRITE_DELAY=str(self.write_delay)) if i % 2 else self.env()
        first = launch(self.cache_cmd(out), self.bench.log, slowed, trigger=trigger)
        at_kill = {"chunks_done": len(glob.glob(os.path.join(out, "v*", "c*.prob.npy"))),
                   "inside_write": bool(glob.glob(os.path.join(out, "v*", ".*.tmp"))),
                   "half_chunk": len(glob.glob(os.path.join(out, "v*", "c*.cls.npy")))
                   > len(glob.glob(os.path.join(out, "v*", "c*.prob.npy")))}
        resumed = launch(self.cache_cmd(out), self.bench.log, self.env())
        result = {"killed": first["killed"], **moment, **at_kill, **self.judge(out, reference, resumed)}
        result["ok"] = (result["resumed_rc"] == 0 and result["same_files"] and result["verify_ok"]
                        and not result["temporaries_left"])
        return result

    # -- (b) the teacher engine's conversion -----------------------------------------------------
    def engine_trial(self, i: int, kind: str, reference: Dict[str, Any]) -> Dict[str, Any]:
        out, store = os.path.join(self.work, f"engine_{i}"), os.path.join(self.work, f"engine_store_{i}")
        root = os.path.join(store, "teacher_engine")
        ref = reference["seen"]
        windows = ([("onnx", "saved", "onnx")] if kind == "onnxruntime" else []) + [("jit.save", "save_tmp", "saved")]
        stage, start, end = windows[(i // 2) % len(windows)]  # ONNX Runtime trials alternate the two windows
        wait = self.rng.uniform(0.0, 1.1) * (ref[end] - ref[start])
        starts = {"save_tmp": lambda: bool(glob.glob(os.path.join(root, ".*"))),
                  "saved": lambda: bool(glob.glob(os.path.join(root, "[!.]*", "teacher.pdiparams")))}

        def trigger() -> Optional[float]:
            return wait if starts[start]() else None
        first = launch(self.cache_cmd(out, kind), self.bench.log, self.env(store), trigger=trigger)
        complete = glob.glob(os.path.join(root, "[!.]*", "teacher.pdiparams"))
        onnx_done = glob.glob(os.path.join(root, "*", "teacher.onnx"))
        landed = ("after the conversion" if complete and (kind != "onnxruntime" or onnx_done) else
                  "onnx conversion" if complete else "jit.save")
        left_by_kill = temporaries(store)
        resumed = launch(self.cache_cmd(out, kind), self.bench.log, self.env(store))
        entries = sorted(os.listdir(root)) if os.path.isdir(root) else []
        folder = os.path.join(root, entries[0]) if len(entries) == 1 else ""
        want = {"teacher.json", "teacher.pdiparams"} | ({"teacher.onnx"} if kind == "onnxruntime" else set())
        result = {"engine": kind, "window": stage, "kill_after_s": round(wait, 2), "killed": first["killed"],
                  "landed_in": landed, "left_by_kill": left_by_kill, **self.judge(out, reference, resumed),
                  "store_complete": bool(folder) and set(os.listdir(folder)) == want,
                  "store_temporaries_left": temporaries(store),
                  "resumed_engine": "reused" if " reused " in resumed["output"] else "saved"}
        result["ok"] = (result["resumed_rc"] == 0 and result["same_files"] and result["verify_ok"]
                        and result["store_complete"] and not result["store_temporaries_left"]
                        and not result["temporaries_left"])
        return result

    # -- (d) a full disk --------------------------------------------------------------------------
    def disk_trial(self, i: int, reference: Dict[str, Any], tmpfs: bool) -> Dict[str, Any]:
        mount = os.path.join(self.work, f"disk_{i}")
        out = os.path.join(mount, "cache")
        os.makedirs(mount, exist_ok=True)
        pages = sum(-(-len(json.dumps(v).encode() if isinstance(v, dict) else v) // PAGE)
                    for v in reference["files"].values())
        size = 1 if i == 0 else self.rng.randint(1, pages - 1)  # trial 0: full before the run starts
        env = self.env()
        try:
            if tmpfs:
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size * PAGE}", "tmpfs", mount], check=True)
                if i == 0:
                    with open(os.path.join(mount, "filler"), "wb") as handle:
                        handle.write(b"\0" * (size * PAGE))
                moment = {"tmpfs_pages": size, "cache_pages": pages}
            else:
                budget = 0 if i == 0 else self.rng.randint(0, sum(len(v) for k, v in reference["files"].items()
                                                                   if k.endswith(".npy")))
                env = dict(env, FAULT_ENOSPC_AFTER_BYTES=str(budget))
                moment = {"enospc_after_chunk_bytes": budget}
            full = launch(self.cache_cmd(out), self.bench.log, env)
            errors = [line for line in full["output"].splitlines() if line.startswith("error:")]
            result = self.after_full(out, reference, full, errors, moment)
            if tmpfs:  # free the space: a bigger disk with the same contents (the filler deleted)
                if os.path.exists(os.path.join(mount, "filler")):
                    os.remove(os.path.join(mount, "filler"))
                subprocess.run(["mount", "-o", "remount,size=64m", mount], check=True)
            resumed = launch(self.cache_cmd(out), self.bench.log, self.env())
            result.update(self.judge(out, reference, resumed))
        finally:
            if tmpfs:
                subprocess.run(["umount", mount], check=False)
        result["ok"] = (result["first_rc"] == 2 and result["one_error_line"] and not result["traceback"]
                        and result["names_no_space"] and result["earlier_chunks_valid"] == result["chunks_done"]
                        and result["lock_released"]
                        and not result["temporaries_after_error"] and result["resumed_rc"] == 0
                        and result["same_files"] and result["verify_ok"] and not result["temporaries_left"])
        return result

    @staticmethod
    def after_full(out: str, reference: Dict[str, Any], full: Dict[str, Any], errors: List[str],
                   moment: Dict[str, Any]) -> Dict[str, Any]:
        """The state a full disk left: the error and the chunks written before it (headers and bytes)."""
        from ppssld.cache.integrity import damaged_chunk

        plan_path = os.path.join(out, "plan.json")
        plan = json.load(open(plan_path, encoding="utf-8")) if os.path.isfile(plan_path) else None
        done = sorted(glob.glob(os.path.join(out, "v*", "c*.prob.npy")))
        valid = 0
        for prob in done:
            view, chunk = int(prob.split(os.sep)[-2][1:]), int(os.path.basename(prob)[1:7])
            rels = [os.path.relpath(p, out) for p in (prob.replace(".prob.", ".cls."), prob)]
            same = all(open(os.path.join(out, r), "rb").read() == reference["files"][r] for r in rels)
            valid += int(plan is not None and damaged_chunk(out, view, chunk, plan) is None and same)
        message = errors[0] if errors else ""
        named = ([None] + list(re.finditer(re.escape(out) + r"[^\s:()]*", message)))[-1]  # the last path: the file
        lock = os.path.join(out, ".ppssld.lock")
        return {**moment, "first_rc": full["rc"], "error": message[:300], "one_error_line": len(errors) == 1,
                "traceback": "Traceback" in full["output"], "chunks_done": len(done), "earlier_chunks_valid": valid,
                "names_no_space": "No space left on device" in message and named is not None,
                "failed_file": named.group(0).replace(out, "<out>") if named else "",
                "lock_released": not os.path.isfile(lock) or os.path.getsize(lock) == 0,
                "temporaries_after_error": temporaries(out)}


def tmpfs_available(work: str) -> bool:
    """Whether this process may mount a small tmpfs (root, and mount allowed in this container)."""
    probe = os.path.join(work, "tmpfs_probe")
    os.makedirs(probe, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", probe], check=False)
    shutil.rmtree(probe, ignore_errors=True)
    return ok


def run_parts(bench: Any, counts: Dict[str, int], seed: int, write_delay: float) -> Tuple[Dict[str, Any], str]:
    """Run the ``cache``, ``engine`` and ``disk`` parts (``counts``: trials each); return summaries and the
    cache the ``reader`` part trains from."""
    parts = CacheParts(bench, seed, write_delay)
    summary: Dict[str, Any] = {}
    ref_out = os.path.join(bench.work, "cache_reference")
    if counts.get("cache", 0) or counts.get("disk", 0) or counts.get("reader", 0):
        reference = parts.reference(ref_out)  # converts the teacher into the shared store once
        reference = {**parts.reference(os.path.join(bench.work, "cache_reference_warm")), "files": reference["files"]}
    for i in range(counts.get("cache", 0)):
        trial = parts.cache_trial(i, reference)
        print(f"cache {i}: {trial}", flush=True)
        summary.setdefault("cache", {"reference_wall_s": round(reference["wall"], 1), "trials": []})["trials"].append(trial)
    if counts.get("engine", 0):
        import importlib.util

        kinds = ["paddle_inference"] + (["onnxruntime"] if importlib.util.find_spec("paddle2onnx")
                                        and importlib.util.find_spec("onnxruntime") else [])
        refs = {k: parts.reference(os.path.join(bench.work, f"engine_reference_{k}"), k,
                                   os.path.join(bench.work, f"engine_store_reference_{k}")) for k in kinds}
        trials = []
        for i in range(counts["engine"]):
            kind = kinds[i % len(kinds)]
            trials.append(parts.engine_trial(i, kind, refs[kind]))
            print(f"engine {i}: {trials[-1]}", flush=True)
        summary["engine"] = {"reference_wall_s": round(refs[kinds[0]]["wall"], 1), "trials": trials,
                             "conversion_s": {k: {"jit.save": round(r["seen"]["saved"] - r["seen"]["save_tmp"], 2),
                                                  **({"onnx": round(r["seen"]["onnx"] - r["seen"]["onnx_tmp"], 2)}
                                                     if k == "onnxruntime" else {})} for k, r in refs.items()}}
    if counts.get("disk", 0):
        tmpfs = tmpfs_available(bench.work)
        trials = []
        for i in range(counts["disk"]):
            trials.append(parts.disk_trial(i, reference, tmpfs))
            print(f"disk {i}: {trials[-1]}", flush=True)
        summary["disk"] = {"reference_wall_s": round(reference["wall"], 1), "trials": trials,
                           "how": "a small tmpfs" if tmpfs else "a patched chunk write (no tmpfs could be mounted)"}
    for s in summary.values():
        s["kills"] = sum(bool(t.get("killed")) for t in s["trials"])
        s["mismatches"] = sum(not t["ok"] for t in s["trials"])
        s["temporaries_left"] = sum(len(t["temporaries_left"]) + len(t.get("store_temporaries_left", []))
                                    for t in s["trials"])
    return summary, ref_out


if __name__ == "__main__":
    worker()


def markdown(summary: Dict[str, Any], write_delay: float) -> str:
    """The results section of the cache, engine and disk parts."""
    if not summary:
        return ""
    rows = ["| part | trials | kills | where the faults landed | mismatches | --verify failures | temporaries left "
            "| reference run |", "|---|---|---|---|---|---|---|---|"]
    for kind, s in summary.items():
        trials = s["trials"]
        if kind == "cache":
            where = (f"{sum(t['inside_write'] for t in trials)} inside a chunk file's write, "
                     f"{sum(t['half_chunk'] for t in trials)} between a chunk's two files; chunks done at kill: "
                     f"{sorted(t['chunks_done'] for t in trials)} (of 30)")
        elif kind == "engine":
            where = ", ".join(f"{n} {t}" for t, n in sorted(
                {f"{t['engine']}/{t['landed_in']}": sum(f"{u['engine']}/{u['landed_in']}" == f"{t['engine']}/"
                                                      f"{t['landed_in']}" for u in trials) for t in trials}.items()))
        else:
            where = "failed writes: " + ", ".join(sorted({t["failed_file"] for t in trials}))
        rows.append(f"| {kind} | {len(trials)} | {s['kills']} | {where} | {s['mismatches']} | "
                    f"{sum(not t['verify_ok'] for t in trials)} | {s['temporaries_left']} | {s['reference_wall_s']} s |")
    text = "## Soft-label cache, teacher engine and full disk\n\n" + "\n".join(rows) + "\n\n"
    text += "" if "cache" not in summary else (
        "Cache generation: `tools/cache_soft_labels.py` on the same 900 images (2 views, top-10 of 10 in float32: "
        "the teacher's logits, 30 chunks of 64 images, 60 files), the engine store already holding the teacher. "
        "Even trials: SIGKILL at a random moment (5-95%) of the reference run's generation (first chunk file to "
        "manifest); odd trials: inside the n-th chunk file's write (n drawn from 1-60; the killed process sleeps "
        f"{write_delay} s halfway through each chunk file, a patched `numpy.save` in it only). Then the same "
        "command again. A trial matches when the re-run exits 0, every chunk file is byte-identical to the "
        "uninterrupted run's and `plan.json`/`manifest.json` are equal as JSON (the manifest has no timing field: "
        "compared whole), `--verify` exits 0 and no temporary file is left.\n\n")
    if "engine" in summary:
        conv = "; ".join(f"{engine}: " + ", ".join(f"{step} {sec} s" for step, sec in steps.items())
                         for engine, steps in summary["engine"]["conversion_s"].items())
        text += (
            "Teacher engine: the same generation with `-o Arch.teacher_engine=<engine>` and an empty engine store "
            "per trial (engines alternate), SIGKILL at a random moment of the conversion (0-110% of the reference "
            "run's duration, measured from the store: `paddle.jit.save` from its hidden folder's appearance to the "
            f"published one; {conv}; ONNX Runtime trials alternate it with the ONNX conversion that follows); the "
            "same command again. A trial matches when, beyond the cache checks above (the chunks are the "
            "engine's logits: the same teacher outputs as an uninterrupted run's, byte for byte), the store holds "
            "exactly one complete folder (teacher.json, teacher.pdiparams, and teacher.onnx for ONNX Runtime) and "
            "no temporary copy.\n\n")
    if "disk" in summary:
        text += (
            f"Full disk ({summary['disk']['how']}): the cache folder on a tmpfs of a random size below what the "
            "cache needs (trial 0: a tmpfs already full, so the folder's lock record cannot be written); the run "
            "must exit 2 with one `error:` line naming the file it could not write and `No space left on device`, "
            "no traceback, no temporary file, the lock let go, and every chunk written before the disk filled "
            "whole (header against `plan.json`) and byte-identical to the uninterrupted run's. Then the tmpfs is "
            "grown (`mount -o remount,size=64m`, the filler deleted) and the same command finishes equal to an "
            "uninterrupted run, `--verify` exiting 0. The decision: a full disk is an `OutputError` (exit 2) "
            "naming the file, not a raw `OSError`.\n\n")
    return text
