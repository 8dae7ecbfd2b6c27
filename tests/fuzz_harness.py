"""The input fuzzer shared by ``tests/test_fuzz_inputs.py`` (a seeded subset) and ``benchmark/fuzz_inputs.py``
(the full sweep).

A case is one bad value put where a user could put it:

* ``config``: one ``-o KEY=VALUE`` on a shipped config or a PaddleClas fixture config, for every key the file
  has (leaves, sections and list items), run through ``load_config`` and ``validate``;
* ``train``: the same on a tiny distillation project whose data exists, run through ``build_trainer`` and one
  epoch of training (3 steps), its checkpoint and evaluation;
* ``cli``: one argument of ``tools/select_unlabeled.py`` / ``tools/cache_soft_labels.py`` on a tiny project, run
  in-process under ``cli.run`` as the shell would (status and stderr captured).

Each case ends ``accepted`` (no error), ``refused`` (a ppssld error; ``named`` tells whether its message names
the key or argument), ``crash`` (any other exception: a traceback a user would see) or ``hang`` (over its time
limit). A crash or a hang fails the test; every case is counted in the benchmark.
"""
import contextlib
import io
import json
import logging
import os
import random
import runpy
import signal
import sys
import tempfile
import traceback
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# paths are relative: every case runs in a fresh scratch folder (:func:`scratch_cwd`), so a value that is honoured
# by writing there (``Global.output_dir``) writes nothing outside it
MISSING = "nonexistent/ppssld-fuzz/x.txt"
ODD_PATH = "ppssld fuzz ä/x.txt"  # spaces and non-ASCII (does not exist)
EMPTY_DIR = "empty folder"  # a folder where a file belongs (made empty in each scratch folder)
A_FILE = "a file.txt"  # a file where a folder belongs (one line of text, made in each scratch folder)
# name -> YAML text of the value (``{orig}``: the key's own value, wrapped or unwrapped)
VALUES = {"zero": "0", "minus_one": "-1", "huge": "1e12", "nan": ".nan", "text": "abc", "empty": "''",
          "empty_list": "[]", "empty_map": "{}", "null": "null", "missing_path": repr(MISSING),
          "odd_path": repr(ODD_PATH), "folder_for_file": repr(EMPTY_DIR), "file_for_folder": repr(A_FILE),
          "wrapped": "[{orig}]", "unwrapped": "{first}"}


class Case(NamedTuple):
    kind: str      # config | train | cli
    target: str    # config file or tool
    key: str       # config key or argument
    value: str     # name in VALUES (or the argument's value)
    text: str      # the YAML text / argument string applied


class Outcome(NamedTuple):
    case: Case
    result: str          # accepted | refused | crash | hang
    named: bool          # a refusal's message names the key / argument
    detail: str          # message or traceback tail


class Hang(BaseException):
    """Raised by the alarm: a case over its time limit (BaseException: library code never catches it)."""


@contextlib.contextmanager
def scratch_cwd() -> Iterator[None]:
    """Run in a fresh temporary folder (a relative path a case sets, ``Global.output_dir: abc``, lands there), removed
    afterwards, with the ``ppssld`` logger's handlers set aside and its propagation off: a handler an earlier
    test bound to its own (since closed) captured stream, on this logger or on the root logger that earlier
    tests let records reach, would print logging's "--- Logging error ---" traceback into the case."""
    root = logging.getLogger("ppssld")
    saved, propagate = list(root.handlers), root.propagate
    for handler in saved:
        root.removeHandler(handler)
    root.propagate = False
    try:
        with tempfile.TemporaryDirectory(prefix="ppssld-fuzz-case-") as folder, contextlib.chdir(folder):
            os.mkdir(EMPTY_DIR)
            with open(A_FILE, "w", encoding="utf-8") as handle:
                handle.write("not a folder\n")
            yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in saved:
                handler.close()
        for handler in saved:
            root.addHandler(handler)
        root.propagate = propagate


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` after ``seconds`` (main thread, POSIX)."""
    def alarm(_signum: int, _frame: Any) -> None:
        raise Hang(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def config_files() -> List[str]:
    """The shipped configs and the PaddleClas fixture configs (not the main job's pipeline files)."""
    from tests.conftest import shipped_configs

    fixtures = os.path.join(ROOT, "tests", "fixtures", "paddleclas")
    return shipped_configs() + sorted(os.path.join(fixtures, n) for n in os.listdir(fixtures) if n.endswith(".yaml"))


def config_keys(node: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """Every ``-o`` address in a config with its value: sections, leaves and list items (by index)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, value
            yield from config_keys(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            path = f"{prefix}.{i}"
            yield path, value
            yield from config_keys(value, path)


def _value_text(name: str, orig: Any) -> Optional[str]:
    template = VALUES[name]
    if name == "wrapped":  # a list where a scalar belongs (JSON is YAML)
        return None if orig is None or isinstance(orig, (list, dict)) else f"[{json.dumps(orig, default=str)}]"
    if name == "unwrapped":  # a scalar (the first item) where a list belongs
        return json.dumps(orig[0], default=str) if isinstance(orig, list) and orig else None
    return template


def config_cases(path: str, kind: str = "config") -> List[Case]:
    """Every (key, bad value) case of one config file."""
    with open(path, "r", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    cases = []
    for key, orig in config_keys(config):
        for name in VALUES:
            text = _value_text(name, orig)
            if text is not None:
                cases.append(Case(kind, path, key, name, text))
    return cases


def key_named(key: str, message: str) -> bool:
    """Whether a refusal names the key: its full path, or its last non-index part (``weight`` in
    ``Loss.Train[0].JSDivLoss: weight must be ...``), or the list item it sits in."""
    parts = [p for p in key.split(".") if not p.lstrip("-").isdigit()]
    return key in message or (bool(parts) and parts[-1] in message)


def _classify(case: Case, run: Callable[[], None], seconds: float) -> Outcome:
    from ppssld.utils.errors import PpssldError

    try:
        with time_limit(seconds), scratch_cwd():
            run()
    except Hang as exc:
        return Outcome(case, "hang", False, str(exc))
    except PpssldError as exc:
        return Outcome(case, "refused", key_named(case.key, str(exc)), str(exc)[:300])
    except Exception:  # noqa: BLE001  (the fuzzer's job: any other exception is the finding)
        return Outcome(case, "crash", False, traceback.format_exc()[-1500:])
    return Outcome(case, "accepted", False, "")


def run_config_case(case: Case, seconds: float = 30.0) -> Outcome:
    """``load_config`` + ``validate`` with the case's override."""
    def run() -> None:
        from ppssld.engine.builder import validate
        from ppssld.utils.config import load_config

        validate(load_config(case.target, [f"{case.key}={case.text}"]))

    return _classify(case, run, seconds)


def run_train_case(case: Case, base: str, seconds: float = 60.0) -> Outcome:
    """``build_trainer`` and one epoch (checkpoint and evaluation included) of the tiny project ``base``."""
    def run() -> None:
        from ppssld.engine.builder import build_trainer
        from ppssld.utils.config import load_config

        trainer = build_trainer(load_config(base, [f"{case.key}={case.text}"]))
        trainer.fit(stop_after_epoch=1)

    return _classify(case, run, seconds)


def run_cli_case(case: Case, argv: List[str], seconds: float = 90.0) -> Outcome:
    """A tool's ``main`` under ``cli.run`` with ``argv``: status 0, or 2 with one ``error:`` line, no traceback."""
    from ppssld.utils import cli

    err = io.StringIO()
    script = os.path.join(ROOT, case.target)
    status: Any = None
    saved_argv, saved_path = sys.argv, list(sys.path)
    try:
        with time_limit(seconds), scratch_cwd(), contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            sys.argv = [script] + argv
            main = runpy.run_path(script, run_name="ppssld_fuzz_probe")["main"]
            try:
                cli.run(main)
            except SystemExit as exc:
                status = exc.code
    except Hang as exc:
        return Outcome(case, "hang", False, str(exc))
    except Exception:  # noqa: BLE001
        return Outcome(case, "crash", False, traceback.format_exc()[-1500:])
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    text = err.getvalue()
    errors = [line for line in text.splitlines() if line.startswith("error:") or ": error: " in line]
    if status in (0, None) and "Traceback" not in text:
        return Outcome(case, "accepted", False, "")
    if status == 2 and len(errors) == 1 and "Traceback" not in text:
        named = case.key in errors[0] or (bool(case.text) and case.text in errors[0])  # the argument or its file
        return Outcome(case, "refused", named, errors[0][:300])
    return Outcome(case, "crash", False, f"status {status}: {text[-1500:]}")


CLI_VALUES = {"zero": "0", "minus_one": "-1", "huge": "1e12", "nan": "nan", "text": "abc", "empty": "",
              "missing_path": MISSING, "odd_path": ODD_PATH, "folder_for_file": EMPTY_DIR, "file_for_folder": A_FILE}


def cli_cases(tool: str, arguments: List[str]) -> List[Case]:
    """Every (argument, bad value) case of one tool."""
    return [Case("cli", tool, arg, name, text) for arg in arguments for name, text in CLI_VALUES.items()]


def sample(cases: List[Any], count: int, seed: int) -> List[Any]:
    """A seeded sample of ``count`` cases (all when fewer), in a stable order."""
    if len(cases) <= count:
        return list(cases)
    return random.Random(seed).sample(cases, count)


def summary(outcomes: List[Outcome]) -> Dict[str, Any]:
    """Counts by kind and result, and the refusals that do not name their key."""
    counts: Dict[str, Dict[str, int]] = {}
    for o in outcomes:
        row = counts.setdefault(o.case.kind, {"accepted": 0, "refused": 0, "crash": 0, "hang": 0,
                                              "refused_unnamed": 0})
        row[o.result] += 1
        row["refused_unnamed"] += int(o.result == "refused" and not o.named)
    return {"cases": len(outcomes), "by_kind": counts,
            "tracebacks": sum(o.result == "crash" for o in outcomes), "hangs": sum(o.result == "hang" for o in outcomes)}



def tiny_project(root: str) -> Dict[str, str]:
    """A tiny distillation project under ``root``: 16 labeled + 8 unlabeled 32x32 images of 4 classes, a random
    ResNet18 teacher, its config (``config``) and a mining config (``teacher_config``)."""
    from tests.conftest import distill_config, save_random_backbone, write_images

    data = os.path.join(root, "data")
    paths = write_images(data, 16, 4, unlabeled=8)
    teacher = save_random_backbone(os.path.join(root, "t.pdparams"), class_num=4)
    cfg = distill_config(data, paths, teacher, os.path.join(root, "out"), epochs=1)
    config = os.path.join(root, "cfg.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        yaml.safe_dump(cfg, handle)
    mining = {"Global": {"device": "cpu"}, "Arch": {"name": "ResNet18", "class_num": 4, "pretrained": teacher},
              "DataLoader": {"Eval": cfg["DataLoader"]["Eval"]}}
    teacher_config = os.path.join(root, "teacher.yaml")
    with open(teacher_config, "w", encoding="utf-8") as handle:
        yaml.safe_dump(mining, handle)
    return {"config": config, "teacher_config": teacher_config, "data": data, "out": os.path.join(root, "out"),
            "pool": paths["unlabeled_list.txt"], "val": paths["val_list.txt"], "train": paths["train_list.txt"]}


# the arguments fuzzed per tool, and the valid command each case changes one argument of
CLI_ARGUMENTS = {
    "tools/select_unlabeled.py": ["--k", "--topn", "--batch-size", "--chunk-size", "--min-conf", "--cap",
                                  "--max-pool", "--seed", "--hash-threshold", "--feature-threshold", "--pool",
                                  "--image-root", "--eval-list", "--train-list", "--out", "-c"],
    "tools/cache_soft_labels.py": ["--views", "--topk", "--chunk-size", "--batch-size", "--workers", "--out", "-c",
                                   "--verify"],
}


def cli_base(tool: str, project: Dict[str, str], out: str) -> Dict[str, str]:
    """The valid arguments of ``tool`` on ``project``, writing to ``out`` (argument -> value)."""
    if tool == "tools/select_unlabeled.py":
        return {"-c": project["teacher_config"], "--pool": project["pool"], "--image-root": project["data"],
                "--eval-list": project["val"], "--k": "2", "--out": out, "--chunk-size": "8", "--batch-size": "8"}
    return {"-c": project["config"], "--views": "1", "--topk": "2", "--out": out, "--chunk-size": "8"}


def cli_argv(case: Case, project: Dict[str, str], out: str) -> List[str]:
    """The command line of a cli case: the valid one with ``case.key`` set to ``case.text``."""
    args = cli_base(case.target, project, out)
    if case.key == "--verify":
        args = {"--verify": case.text}
    else:
        args[case.key] = case.text
    return [item for key, value in args.items() for item in (key, value)]
