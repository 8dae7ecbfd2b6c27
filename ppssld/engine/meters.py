"""Running averages and PaddleClas-shaped log formatting."""
import datetime
from typing import Dict, List, Sequence, Tuple

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
    """Sample-weighted averages of named scalar tensors that stay on the device until read.

    Each step's parts are only kept (detached: no kernel, no host read); :meth:`window` stacks
    those since the last read for the caller's single host transfer, and :meth:`read_from`
    adds them up in float64 on the host, exactly as a per-key ``AverageMeter`` fed ``float(part)``
    every step would.
    """

    def __init__(self) -> None:
        self._rows: List[Tuple[List[str], List[paddle.Tensor], int]] = []
        self.sums: Dict[str, float] = {}
        self.counts: Dict[str, int] = {}
        self.averages: Dict[str, float] = {}

    def update(self, parts: Dict[str, paddle.Tensor], n: int) -> None:
        """Keep every part (the batch mean: any shape holding one value) observed over ``n`` samples."""
        self._rows.append((list(parts), [value.detach() for value in parts.values()], int(n)))

    def window(self) -> List[paddle.Tensor]:
        """The parts kept since the last read as one float64 vector in a list (empty list if none)."""
        flat = [value.reshape([-1]).sum().astype("float64") for _, values, _ in self._rows for value in values]
        return [paddle.stack(flat)] if flat else []

    def read_from(self, values: Sequence[float]) -> List[float]:
        """Add the window's values (read from :meth:`window`, first in ``values``) to the sums and set
        :attr:`averages`; returns what follows the window in ``values``."""
        used = 0
        for keys, _, n in self._rows:
            for key in keys:
                self.sums[key] = self.sums.get(key, 0.0) + float(values[used]) * n
                self.counts[key] = self.counts.get(key, 0) + n
                used += 1
        self._rows = []
        self.averages = {k: self.sums[k] / self.counts[k] if self.counts[k] else 0.0 for k in self.sums}
        return list(values[used:])
