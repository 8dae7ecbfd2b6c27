"""Shared command-line plumbing for tools/*.py and deploy/: ``-c config.yaml -o Section.key=value``, and :func:`run`.

Floor 1 (it imports only ``ppssld.utils``), so the predictor and the quantizer use it without the training engine.

:func:`run` is the one place where a user's mistake becomes a message instead of a traceback:
a :class:`~ppssld.utils.errors.PpssldError` (ConfigError, DataError, WeightsError, ...) prints
``error: <message>`` on stderr and exits with status 2, and so does a missing third-party package
(:mod:`ppssld.utils.deps`); ``--debug`` or ``PPSSLD_DEBUG=1`` shows the traceback as well. Any other exception keeps its traceback (it is a bug, not a user error).
"""
import argparse
import logging
import os
import sys
import traceback
from typing import Any, Callable, Dict, List, NoReturn, Optional

from ppssld.utils.config import load_config, output_dir
from ppssld.utils.deps import DEBUG_ENV, DEBUG_FLAG, USER_ERROR_STATUS, debug_enabled, missing_dependency_exits
from ppssld.utils.dist_env import world_size
from ppssld.utils.errors import PpssldError
from ppssld.utils.logger import setup_logging
from ppssld.utils.cpu_dispatch import dispatch_note
from ppssld.utils.threads import thread_source

logger = logging.getLogger(__name__)

__all__ = ["CONFIG_HELP", "DEBUG_ENV", "DEBUG_FLAG", "OVERRIDE_HELP", "USER_ERROR_STATUS", "add_debug_flag",
           "base_parser", "debug_enabled", "flat_overrides", "load", "override_argument", "run"]


def add_debug_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` the ``--debug`` switch (read by :func:`run` before parsing)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"on an error, also show the Python traceback (same as {DEBUG_ENV}=1; default: off, "
                             f"one 'error: ...' line)")
    return parser


OVERRIDE_HELP = ("override one config value, Section.key=VALUE (VALUE is read as YAML), e.g. -o Global.epochs=3; "
                 "give several after one -o or repeat -o, applied in order (default: none)")


def override_argument(parser: argparse.ArgumentParser, help_text: str = OVERRIDE_HELP) -> argparse.ArgumentParser:
    """Give ``parser`` the repeatable ``-o KEY=VALUE [KEY=VALUE ...]``; read it with :func:`flat_overrides`."""
    parser.add_argument("-o", "--override", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help=help_text)
    return parser


def _log_to_files(message: str) -> None:
    """Record the error in the run's log files (the console gets it on stderr)."""
    record = logging.LogRecord("ppssld", logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger("ppssld").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def run(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a tool's ``main`` and exit with its status; a ppssld error becomes one line and status 2.

    Args:
        main: the tool's entry point; returns an exit status (None = 0).
    """
    if DEBUG_FLAG in sys.argv[1:]:
        os.environ[DEBUG_ENV] = "1"  # child processes (distributed workers, pipeline stages) inherit it
    try:
        with missing_dependency_exits():  # a package imported only inside main: one line, status 2
            status = main()
    except PpssldError as exc:
        if debug_enabled():
            traceback.print_exc()
        message = str(exc).strip() or type(exc).__name__
        _log_to_files(message)
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        sys.exit(USER_ERROR_STATUS)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    status = 0 if status is None else int(status)
    if status == 0 and getattr(main, "__module__", "") == "__main__" and _single_process():
        _exit_without_teardown()
    sys.exit(status)


def _single_process() -> bool:
    """No ``paddle.distributed.launch`` peers: their collective library closes its connections at teardown."""
    return world_size() <= 1


def _exit_without_teardown() -> NoReturn:
    """End a tool's process that succeeded: atexit handlers run (logging flushes and closes its files,
    multiprocessing stops its workers), then the process exits without the interpreter's teardown of
    every module and tensor, which takes ~0.3 s after Paddle was imported and changes nothing on disk."""
    import atexit

    atexit._run_exitfuncs()  # noqa: SLF001  (the handlers the interpreter would run, in the same order)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


CONFIG_HELP = "YAML config file, PaddleClas schema (Global, Arch, DataLoader, ...); required"


def base_parser(description: str, trust_flag: bool = True, config_help: str = CONFIG_HELP,
                override_help: str = OVERRIDE_HELP, config_required: bool = True) -> argparse.ArgumentParser:
    """A parser with PaddleClas's ``-c`` and repeatable ``-o`` options, and ``--trust-weights``
    (unless ``trust_flag`` is False: tools that read no weights themselves); ``config_help`` and
    ``override_help`` describe ``-c`` and ``-o`` for a tool whose config is not PaddleClas's;
    ``config_required=False``: a tool with a mode that reads no config checks ``-c`` itself."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=config_required, help=config_help)
    override_argument(parser, override_help)
    if trust_flag:
        parser.add_argument("--trust-weights", action="store_true",
                            help="read weight files with paddle.load, which runs any code a file holds "
                                 "(same as -o Global.trust_weights=True); only for files whose author you trust "
                                 "(default: off, weights are read as plain data)")
    return add_debug_flag(parser)


def flat_overrides(groups: List[List[str]], trust: bool = False) -> List[str]:
    """``-o a=1 b=2 -o c=3`` -> ``[a=1, b=2, c=3]``; ``trust`` (``--trust-weights``) appends
    ``Global.trust_weights=True``."""
    return [item for group in groups for item in group] + (["Global.trust_weights=True"] if trust else [])


def load(args: argparse.Namespace, log_name: Optional[str] = None) -> Dict[str, Any]:
    """Set up logging and load the config named by ``args``.

    Args:
        args: parsed arguments with ``config`` and ``override``.
        log_name: also log to ``<Global.output_dir>/<log_name>`` (rank 0).
    Returns:
        The validated-structure config.
    """
    setup_logging()
    config = load_config(args.config, flat_overrides(args.override, getattr(args, "trust_weights", False)))
    if log_name:
        setup_logging(os.path.join(output_dir(config), log_name))
    logger.info("config %s; OMP_NUM_THREADS=%s (chosen by %s); %s", args.config, os.environ.get("OMP_NUM_THREADS"),
                thread_source(), dispatch_note())
    return config
