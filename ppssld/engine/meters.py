"""Running averages and PaddleClas-shaped log formatting."""
import datetime
from typing import Dict


class AverageMeter:
    """Sample-weighted running average."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        """Add ``value`` observed over ``n`` samples."""
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        """The average so far (0 before any update)."""
        return self.sum / self.count if self.count else 0.0


def format_metrics(values: Dict[str, float]) -> str:
    """``name: 0.12345, ...`` as PaddleClas prints them (loss parts first, then metrics)."""
    return ", ".join(f"{k}: {v:.5f}" for k, v in values.items())


def format_eta(seconds: float) -> str:
    """``H:MM:SS``."""
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))
