"""Shared helpers for benchmark scripts: machine description and results files."""
import datetime
import os
import platform
import subprocess
import sys
from typing import Any, Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmark", "results")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import ppssld  # noqa: E402,F401  (chooses the CPU thread count before any script imports paddle)


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


def write_results(name: str, payload: Dict[str, Any], markdown: str) -> str:
    """Write ``results/<name>.json`` and ``results/<name>.md`` with command, machine and date."""
    from ppssld.utils.io import atomic_write_json, atomic_write_text

    payload = {"command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
               "machine": machine(), "date": datetime.datetime.now().isoformat(timespec="seconds"), **payload}
    os.makedirs(RESULTS, exist_ok=True)
    atomic_write_json(os.path.join(RESULTS, name + ".json"), payload)
    head = (f"Command: `python {payload['command']}`  \nMachine: {payload['machine']['cpu']}, "
            f"{payload['machine']['cores']} cores, paddle {payload['machine']['paddle']}, "
            f"OMP_NUM_THREADS={payload['machine']['OMP_NUM_THREADS']}  \nDate: {payload['date']}\n\n")
    atomic_write_text(os.path.join(RESULTS, name + ".md"), head + markdown)
    return os.path.join(RESULTS, name + ".json")
