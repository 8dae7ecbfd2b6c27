"""Exception types with messages meant for users: all derive from :class:`PpssldError`."""
import difflib
from typing import Iterable, List


class PpssldError(Exception):
    """Base of every error whose message is meant for the user (the CLIs print it and exit 2)."""


class ConfigError(PpssldError, ValueError):
    """A configuration key, value or component name is wrong."""


class DataError(PpssldError, ValueError):
    """A label list, image or dataset is wrong."""


class WeightsError(PpssldError, ValueError):
    """A weight file does not match the model it is loaded into."""


class OutputError(PpssldError, OSError):
    """An output (checkpoint, export, report) cannot be written: folder not writable, disk full."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> List[str]:
    """Return up to ``n`` candidates closest to ``name`` (case-insensitive).

    Args:
        name: the misspelled word.
        candidates: the valid words.
        n: how many suggestions at most.
    Returns:
        Suggestions, best first (original spelling).
    """
    cands = list(candidates)
    lower = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(str(name).lower(), list(lower), n=n, cutoff=0.5)
    return [lower[h] for h in hits]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A short ``did you mean ...?`` phrase, or an empty string."""
    hits = closest(name, candidates)
    return f" Did you mean {' or '.join(repr(h) for h in hits)}?" if hits else ""
