"""Run a tool with one injected fault in a chunk write (for tests): ``python tests/fault_inject.py MODE N TOOL ARGS``.

The ``N``-th ``.npy`` file that ``numpy.save`` writes into an open temporary (1-based: a soft-label cache
chunk is two files, ``.cls`` then ``.prob``) is written halfway, then

* ``kill``: the process sends itself SIGKILL (no clean-up runs: what ``kill -9`` mid-write leaves);
* ``enospc``: the write raises ``OSError(ENOSPC)``, as a full disk does.
"""
import errno
import io
import os
import runpy
import signal
import sys
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    mode, nth, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode not in ("kill", "enospc"):
        raise SystemExit(f"mode must be kill or enospc, got {mode!r}")
    real_save = np.save
    seen = {"files": 0}

    def faulty_save(file: Any, array: Any, *args: Any, **kwargs: Any) -> None:
        if ".npy." not in str(getattr(file, "name", "")):
            real_save(file, array, *args, **kwargs)
            return
        seen["files"] += 1
        if seen["files"] != nth:
            real_save(file, array, *args, **kwargs)
            return
        buffer = io.BytesIO()
        real_save(buffer, array, *args, **kwargs)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    np.save = faulty_save
    sys.argv = [script] + sys.argv[4:]
    sys.path.insert(0, ROOT)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
