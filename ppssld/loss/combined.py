"""Build the weighted sum of the losses listed in ``Loss.Train`` / ``Loss.Eval``."""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from ppssld.loss.losses import ConfigLoss, Outputs
from ppssld.utils.errors import ConfigError
from ppssld.utils.registry import LOSSES, component_entries

logger = logging.getLogger(__name__)


class CombinedLoss(nn.Layer):
    """Weighted sum of config losses.

    ``forward`` returns ``{"loss": total, <part>: weighted part, ...}``; every weight is
    applied, even with a single loss (PaddleClas ignores ``weight`` when only one loss is
    listed). Part names repeated across entries get ``_2``, ``_3``... suffixes.

    Args:
        losses: built config losses, each carrying its ``weight``.
    """

    def __init__(self, losses: Sequence[ConfigLoss]) -> None:
        super().__init__()
        if not losses:
            raise ConfigError("a loss list must hold at least one loss")
        self.loss_func = nn.LayerList(list(losses))  # PaddleClas's attribute name: same checkpoint keys

    def forward(self, outputs: Outputs, labels: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        """Compute every part.

        Args:
            outputs: dict ``model name -> logits`` or a logits Tensor.
            labels: int64 ``[N]`` (``-1`` = unlabeled); only hard-label losses read it.
        Returns:
            ``"loss"`` (weighted total) and one entry per weighted part.
        """
        result: Dict[str, paddle.Tensor] = {}
        for loss in self.loss_func:
            for name, value in loss(outputs, labels).items():
                unique, n = name, 1
                while unique in result or unique == "loss":
                    n += 1
                    unique = f"{name}_{n}"
                result[unique] = value * loss.weight if loss.weight != 1.0 else value
        result["loss"] = paddle.add_n(list(result.values()))
        return result


def _entries(cfg_list: Any, where: str) -> List[Tuple[str, Dict[str, Any]]]:
    return component_entries(cfg_list, where, "[{JSDivLoss: {weight: 1.0, model_name_pairs: [[Student, Teacher]]}}]")


def _build_one(name: str, params: Dict[str, Any], where: str) -> ConfigLoss:
    LOSSES.check_kwargs(name, params, where)
    try:
        loss = LOSSES.build(name, params, where)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    loss.config_name = name
    loss.where = where
    return loss


def build_loss(cfg_list: Any, where: str = "Loss.Train") -> CombinedLoss:
    """Build a :class:`CombinedLoss` from a YAML loss list.

    Args:
        cfg_list: ``[{LossName: {weight: ..., ...}}, ...]`` (not mutated).
        where: config location used in error messages.
    Returns:
        The combined loss.
    Raises:
        ConfigError: bad structure, unknown loss name or parameter, bad value.
    """
    losses = [_build_one(name, params, f"{where}[{i}].{name}")
              for i, (name, params) in enumerate(_entries(cfg_list, where))]
    logger.debug("%s: %s", where, ", ".join(f"{l.config_name} x{l.weight:g}" for l in losses))
    return CombinedLoss(losses)


def validate_loss_config(cfg_list: Any, where: str = "Loss.Train") -> List[Tuple[str, str, str]]:
    """Check a loss list (structure, names, parameters and values) without keeping any loss.

    Constructing the losses is the check (trainable ones create their small layers, which are
    discarded).

    Returns:
        :func:`compared_logits` of the losses: the model pairs whose class counts must agree.
    Raises:
        ConfigError: as :func:`build_loss`.
    """
    return compared_logits([_build_one(name, params, f"{where}[{i}].{name}")
                            for i, (name, params) in enumerate(_entries(cfg_list, where))])


def compared_logits(losses: Sequence[ConfigLoss]) -> List[Tuple[str, str, str]]:
    """``(loss location, first model, second model)`` for each pair of models whose logits a loss compares
    class by class (see :meth:`ppssld.loss.losses.ConfigLoss.logit_pairs`)."""
    return [(loss.where or loss.config_name, a, b) for loss in losses for a, b in loss.logit_pairs()]


def check_mixed_label_support(loss: CombinedLoss, where: str = "Loss.Train") -> None:
    """Raise unless every loss of ``loss`` can train on batches mixed by a batch operator.

    Raises:
        ConfigError: naming the losses that read labels but not mixed ones.
    """
    bad = [f"{where}[{i}].{item.config_name}" for i, item in enumerate(loss.loss_func)
           if not getattr(item, "accepts_mixed_labels", False)]
    if bad:
        raise ConfigError(f"{', '.join(bad)} cannot train on batches mixed by DataLoader.Train.dataset."
                          f"batch_transform_ops (Mixup/Cutmix): use CELoss, DistillationGTCELoss or a "
                          f"teacher-student loss, or remove batch_transform_ops")
