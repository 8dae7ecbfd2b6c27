"""``GoogLeNetLoss``: cross-entropy over GoogLeNet's main and two auxiliary classifiers."""
import logging
from typing import Any, Dict, Optional, Sequence

import paddle

from ppssld.loss.losses import ConfigLoss, hard_ce, require_labels
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import LOSSES

logger = logging.getLogger(__name__)

AUX_WEIGHT = 0.3  # Szegedy et al. 2014, and PaddleClas: main + 0.3 * aux1 + 0.3 * aux2


def _logits(out: Any) -> paddle.Tensor:
    return out["logits"] if isinstance(out, dict) else out


@LOSSES.register()
class GoogLeNetLoss(ConfigLoss):
    """``CE(main) + 0.3 * CE(aux1) + 0.3 * CE(aux2)`` on GoogLeNet's ``[out, out1, out2]``.

    The same value as PaddleClas's ``GoogLeNetLoss``; rows labelled ``-1`` are skipped
    (mean over labeled rows), and on a mixed batch each CE is the mixed-target CE.

    Args:
        weight: multiplier in the total loss.
        epsilon: label smoothing is not supported (as in PaddleClas): null or 0 only.
    """

    accepts_mixed_labels = True

    def __init__(self, weight: float = 1.0, epsilon: Optional[float] = None) -> None:
        super().__init__(weight)
        if epsilon not in (None, 0):
            raise ConfigError(f"GoogLeNetLoss has no label smoothing (nor has PaddleClas's): set epsilon to "
                              f"null or remove it, got {epsilon!r}")

    def forward(self, outputs: Any, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        labels = require_labels(labels, self.where or self.config_name)
        if not isinstance(outputs, Sequence) or isinstance(outputs, str) or len(outputs) != 3:
            kind = f"a dict of models {sorted(outputs)}" if isinstance(outputs, dict) else type(outputs).__name__
            raise ConfigError(f"GoogLeNetLoss{' at ' + self.where if self.where else ''} needs GoogLeNet's "
                              f"three outputs [main, aux1, aux2], got {kind}; use CELoss for other models")
        main, aux1, aux2 = (_logits(o) for o in outputs)
        loss = hard_ce(main, labels, None) + AUX_WEIGHT * (hard_ce(aux1, labels, None)
                                                            + hard_ce(aux2, labels, None))
        return {self.config_name: loss}
