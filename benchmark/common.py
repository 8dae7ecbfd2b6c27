"""Shared helpers for benchmark scripts: paths, machine description, the command line and results files.

Every script lives in ``benchmark/<group>/<name>.py`` and writes ``benchmark/results/<group>/<name>.{json,md}``:
:func:`results_dir` derives the group's folder from the script's own path, so a script moved to another group
writes beside its new siblings. Scripts start with the same three lines so that both ``python
benchmark/<group>/<name>.py`` and ``python -m benchmark.<group>.<name>`` work from the repository root::

    if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from benchmark import common
"""
import datetime
import os
import platform
import subprocess
import sys
from typing import Any, Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmark", "results")
GROUPS = ("ladder", "mining", "throughput", "robustness", "gpu", "studies", "compat")

import ppssld  # noqa: E402,F401  (chooses the CPU thread count before any script imports paddle)


def results_dir(script: str) -> str:
    """``benchmark/results/<group>/`` for a file of ``benchmark/<group>/`` (pass the script's ``__file__``)."""
    group = os.path.basename(os.path.dirname(os.path.abspath(script)))
    if group not in GROUPS:
        raise ValueError(f"{script} is not in a benchmark group folder ({', '.join(GROUPS)})")
    return os.path.join(RESULTS, group)


def command_line() -> str:
    """This run as the results record it, from the repository root: ``benchmark/<group>/<name>.py <args>``."""
    return " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:])


def machine() -> Dict[str, Any]:
    """CPU model, core count, memory, Python and Paddle versions, thread setting."""
    import paddle

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            mem = f"{int(handle.readline().split()[1]) / 1024 ** 2:.0f} GiB"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "paddle": paddle.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE"),
            "git_commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                         text=True).stdout.strip()}


def write_results(name: str, payload: Dict[str, Any], markdown: str, folder: str) -> str:
    """Write ``<folder>/<name>.json`` and ``<folder>/<name>.md`` with command, machine and date; return the JSON path.

    ``folder`` is normally :func:`results_dir` of the script (or its ``--results-dir``)."""
    from ppssld.utils.io import atomic_write_json, atomic_write_text

    payload = {"command": command_line(), "machine": machine(),
               "date": datetime.datetime.now().isoformat(timespec="seconds"), **payload}
    os.makedirs(folder, exist_ok=True)
    atomic_write_json(os.path.join(folder, name + ".json"), payload)
    head = (f"Command: `python {payload['command']}`  \nMachine: {payload['machine']['cpu']}, "
            f"{payload['machine']['cores']} cores, paddle {payload['machine']['paddle']}, "
            f"OMP_NUM_THREADS={payload['machine']['OMP_NUM_THREADS']}  \nDate: {payload['date']}\n\n")
    atomic_write_text(os.path.join(folder, name + ".md"), head + markdown)
    return os.path.join(folder, name + ".json")
