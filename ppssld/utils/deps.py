"""A missing third-party package becomes one line and status 2 instead of a traceback.

Imports only the standard library, so a tool can enter :func:`missing_dependency_exits` before anything
that needs Paddle, PyYAML or NumPy is imported::

    from ppssld.utils.deps import missing_dependency_exits
    with missing_dependency_exits():
        from ppssld.utils import cli

``--debug`` on the command line (or ``PPSSLD_DEBUG=1``) prints the traceback as well.
"""
import contextlib
import os
import sys
import traceback
from typing import Iterator, NoReturn, Optional

DEBUG_ENV = "PPSSLD_DEBUG"
DEBUG_FLAG = "--debug"
USER_ERROR_STATUS = 2
INSTALL_HINT = "run bash scripts/install.sh (or activate .venv: source .venv/bin/activate)"


def debug_enabled() -> bool:
    """True when ``PPSSLD_DEBUG`` is set to something other than ``0``/``false``/empty."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def missing_third_party(exc: ModuleNotFoundError) -> Optional[str]:
    """The top-level name of the third-party package ``exc`` could not find, or None.

    None for ppssld's own modules and the standard library's (those are bugs or a broken Python,
    not a missing install) and for errors without a module name.
    """
    top = (exc.name or "").split(".")[0]
    if not top or top == "ppssld" or top in sys.stdlib_module_names:
        return None
    return top


def exit_missing(module: str) -> NoReturn:
    """Print ``error: <module> is not installed: ...`` on stderr and exit with status 2."""
    sys.stderr.write(f"error: {module} is not installed: {INSTALL_HINT}\n")
    sys.stderr.flush()
    sys.exit(USER_ERROR_STATUS)


@contextlib.contextmanager
def missing_dependency_exits() -> Iterator[None]:
    """Turn a ``ModuleNotFoundError`` for a third-party package inside the block into one line and status 2.

    Any other exception, and a missing ppssld or standard-library module, propagates unchanged.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        module = missing_third_party(exc)
        if module is None:
            raise
        if debug_enabled() or DEBUG_FLAG in sys.argv[1:]:
            traceback.print_exc()
        exit_missing(module)
