"""Running averages and PaddleClas-shaped log formatting."""
import datetime
from typing import Dict, List, Sequence

import paddle


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


class DeviceMeters:
    """Sample-weighted sums of named scalar tensors, kept on the device until :meth:`read_from` gets them.

    The training loop adds each step's loss parts here (no host read); at its print step it reads
    :meth:`tensors` in one transfer, together with its other flags, and hands the values back.
    """

    def __init__(self) -> None:
        self.sums: Dict[str, paddle.Tensor] = {}
        self.count = 0
        self.averages: Dict[str, float] = {}

    def update(self, parts: Dict[str, paddle.Tensor], n: int) -> None:
        """Add every part (a 0-d tensor, the batch mean) observed over ``n`` samples."""
        with paddle.no_grad():
            for key, value in parts.items():
                weighted = value.detach().astype("float64").sum() * n  # 0-d, whatever the part's shape
                self.sums[key] = weighted if key not in self.sums else self.sums[key] + weighted
        self.count += n

    def tensors(self) -> List[paddle.Tensor]:
        """The running sums (0-d float64), in key order."""
        return list(self.sums.values())

    def read_from(self, values: Sequence[float]) -> Dict[str, float]:
        """Set and return the averages from ``values``, read from :meth:`tensors`."""
        self.averages = {k: float(v) / self.count if self.count else 0.0 for k, v in zip(self.sums, values)}
        return self.averages
