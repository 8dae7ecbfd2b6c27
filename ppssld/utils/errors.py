"""Exception types with messages meant for users."""
import difflib
from typing import Iterable, List


class ConfigError(ValueError):
    """A configuration key, value or component name is wrong."""


class DataError(ValueError):
    """A label list, image or dataset is wrong."""


class WeightsError(ValueError):
    """A weight file does not match the model it is loaded into."""


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
