"""A tool that succeeds exits without the interpreter's teardown, yet its output, log files and atexit
handlers are all complete; a non-zero status still exits normally with that status."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOOL = r"""
import atexit, logging, sys
sys.path.insert(0, sys.argv[1])
from ppssld.utils import cli

def main():
    log = logging.getLogger("tool")
    log.addHandler(logging.FileHandler(sys.argv[2] + ".log"))
    log.warning("last line of the log")
    atexit.register(lambda: print("atexit handler ran"))
    print("buffered output " * 200)  # stdout is a pipe: block-buffered, lost unless flushed
    return int(sys.argv[3])

cli.run(main)
"""


def _tool(tmp_path, status: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TOOL, ROOT, str(tmp_path / "run"), str(status)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, PADDLE_TRAINERS_NUM="1"))


def test_success_flushes_output_logs_and_runs_atexit_handlers(tmp_path):
    proc = _tool(tmp_path, 0)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("buffered output") == 200
    assert proc.stdout.rstrip().endswith("atexit handler ran")
    assert (tmp_path / "run.log").read_text() == "last line of the log\n"


def test_failure_status_is_kept(tmp_path):
    proc = _tool(tmp_path, 3)
    assert proc.returncode == 3
    assert "atexit handler ran" in proc.stdout
