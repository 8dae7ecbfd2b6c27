"""Logging set-up: one format, rank-aware, optional log file."""
import logging
import os
import sys
from typing import Optional

from ppssld.utils.dist_env import rank as dist_rank
from ppssld.utils.errors import OutputError

FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"


def setup_logging(log_file: Optional[str] = None, level: int = logging.INFO) -> None:
    """Configure the root ``ppssld`` logger once.

    Non-zero ranks log warnings and errors only, so output is not repeated per process.

    Args:
        log_file: also append to this file (rank 0 only).
        level: level for rank 0.
    Raises:
        OutputError: the log file cannot be created.
    """
    root = logging.getLogger("ppssld")
    rank = dist_rank()
    root.setLevel(level if rank == 0 else logging.WARNING)
    if not any(getattr(h, "_ppssld", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
        handler._ppssld = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    if log_file and rank == 0:
        path = os.path.abspath(log_file)
        if not any(getattr(h, "baseFilename", None) == path for h in root.handlers):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fh = logging.FileHandler(path, encoding="utf-8")
            except OSError as exc:
                raise OutputError(f"cannot write the log file {path}: {exc.strerror or exc}; choose a writable "
                                  f"output folder (Global.output_dir)") from exc
            fh.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
            root.addHandler(fh)
    root.propagate = False
