"""Checks on values that live on the device, read without a host sync per training step.

Outside a training loop a check reads its flag at once (``bool(flag)``) and raises or warns
immediately, as any library call would. Inside :func:`deferred` (the trainer enters it for its
steps) each check's flag is OR-ed on the device under its key, and the trainer reads every flag
in the same single host transfer as its loss meters, at its print step (``Global.print_batch_step``)
and at the end of the epoch; it then raises the first error or logs each warning once, naming the
steps the flag covers. On a GPU this is what keeps the device busy: a host read waits for every
queued kernel.
"""
import logging
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

import paddle

logger = logging.getLogger(__name__)


class DeferredChecks:
    """Flags accumulated on the device, by key, until the owner reads them."""

    def __init__(self) -> None:
        self._flags: Dict[str, Tuple[paddle.Tensor, Union[Exception, str]]] = {}
        self._warned: Set[str] = set()

    def add(self, key: str, bad: paddle.Tensor, outcome: Union[Exception, str]) -> None:
        """OR ``bad`` (a bool tensor, any shape) into ``key``'s flag; ``outcome``: the error to raise or the
        warning to log when the flag is read as set."""
        flag = bad.any() if bad.ndim else bad
        previous = self._flags.get(key)
        self._flags[key] = (flag if previous is None else previous[0] | flag, outcome if previous is None
                            else previous[1])

    def tensors(self) -> List[paddle.Tensor]:
        """The flags as float64 0-d tensors, in key order (for one stacked host read)."""
        return [flag.astype("float64") for flag, _ in self._flags.values()]

    def settle(self, values: List[float], where: str) -> Optional[Exception]:
        """Act on the flags ``values`` (read from :meth:`tensors`) shows set, then forget every flag.

        Each warning is logged once per :class:`DeferredChecks`, suffixed with ``where`` (the steps
        the flags covered). Returns the first set error, its message suffixed likewise (None if none).
        """
        error: Optional[Exception] = None
        for (_, outcome), value in zip(self._flags.values(), values):
            if not value:
                continue
            if isinstance(outcome, Exception):
                if error is None:
                    error = type(outcome)(f"{outcome} ({where})")
            elif outcome not in self._warned:
                self._warned.add(outcome)
                logger.warning("%s (first seen %s; logged once)", outcome, where)
        self._flags.clear()
        return error

    def __len__(self) -> int:
        return len(self._flags)


_ACTIVE: Dict[str, Optional[DeferredChecks]] = {"checks": None}


@contextmanager
def deferred(checks: DeferredChecks) -> Iterator[DeferredChecks]:
    """Collect every :func:`check` made inside into ``checks`` instead of reading it at once."""
    previous = _ACTIVE["checks"]
    _ACTIVE["checks"] = checks
    try:
        yield checks
    finally:
        _ACTIVE["checks"] = previous


def deferring() -> bool:
    """True inside :func:`deferred`: a check's detail (which values, how many rows) cannot be read now."""
    return _ACTIVE["checks"] is not None


def check(key: str, bad: paddle.Tensor, outcome: Union[Exception, str]) -> None:
    """Raise ``outcome`` (an exception) or log it (a warning text) when ``bad`` holds a True.

    Immediately outside :func:`deferred`; inside, when the owner next reads its flags.
    """
    checks = _ACTIVE["checks"]
    if checks is not None:
        checks.add(key, bad, outcome)
        return
    if bool(bad.any() if bad.ndim else bad):
        if isinstance(outcome, Exception):
            raise outcome
        logger.warning("%s", outcome)
