"""Progress that suits where it goes: a tqdm bar on a terminal, periodic log lines otherwise.

tqdm redraws its bar with carriage returns; written to a log file (or a pipe) that makes one very
long line. :func:`progress` gives the bar only when stderr is a terminal; otherwise a
:class:`LogProgress` that logs ``desc: n/total (pct) rate, eta`` at most every ``log_interval``
seconds and once at the end.
"""
import logging
import sys
import time
from typing import Any, Iterable, Iterator, Optional

from tqdm import tqdm

logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 30.0


class LogProgress:
    """The part of tqdm's interface ppssld uses (iteration, ``update``, ``n``, ``total``, ``with``), as log lines."""

    def __init__(self, iterable: Optional[Iterable[Any]] = None, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", disable: Optional[bool] = False, log_interval: float = LOG_INTERVAL_S,
                 **_ignored: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.disable = bool(disable)
        self.log_interval = float(log_interval)
        self.start = self.last = time.monotonic()
        self.closed = False
        self.logged_n = -1

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.log_interval:
            self.last = now
            self._log(now)

    def _log(self, now: float) -> None:
        if self.disable or self.n == self.logged_n:
            return
        self.logged_n = self.n
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        if self.total:
            eta = (self.total - self.n) / rate if rate > 0 else float("nan")
            logger.info("%s: %d/%d %s (%.0f%%), %.1f %s/s, eta %.0f s", self.desc, self.n, self.total, self.unit,
                        100.0 * self.n / self.total, rate, self.unit, eta)
        else:
            logger.info("%s: %d %s, %.1f %s/s", self.desc, self.n, self.unit, rate, self.unit)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._log(time.monotonic())


def progress(iterable: Optional[Iterable[Any]] = None, **kwargs: Any) -> Any:
    """A tqdm bar when stderr is a terminal, else a :class:`LogProgress` (same arguments)."""
    stream = kwargs.get("file") or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(iterable, **kwargs)
    return LogProgress(iterable, **kwargs)
