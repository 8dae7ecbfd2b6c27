"""Shared command-line plumbing for tools/*.py: ``-c config.yaml -o Section.key=value``."""
import argparse
import logging
import os
from typing import Any, Dict, List, Optional

from ppssld.config import get, load_config
from ppssld.utils.logger import setup_logging
from ppssld.utils.threads import thread_source

logger = logging.getLogger(__name__)


def base_parser(description: str, trust_flag: bool = True) -> argparse.ArgumentParser:
    """A parser with PaddleClas's ``-c`` and repeatable ``-o`` options, and ``--trust-weights``
    (unless ``trust_flag`` is False: tools that read no weights themselves)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config (PaddleClas schema)")
    parser.add_argument("-o", "--override", action="append", nargs="+", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. -o Global.epochs=3")
    if trust_flag:
        parser.add_argument("--trust-weights", action="store_true",
                            help="read weight files with paddle.load, which runs any code a file holds "
                                 "(same as -o Global.trust_weights=True); only for files whose author you trust")
    return parser


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
        setup_logging(os.path.join(get(config, "Global.output_dir", "./output"), log_name))
    logger.info("config %s; OMP_NUM_THREADS=%s (chosen by %s)", args.config, os.environ.get("OMP_NUM_THREADS"),
                thread_source())
    return config
