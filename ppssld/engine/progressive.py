"""Progressive training: PaddleClas's ``Global.train_mode: progressive`` (the EfficientNetV2 recipe).

Training is cut into ``S`` stages (``S`` = the length of the progress lists; 4 in PaddleClas, which
hard-codes it). Stage ``k`` (0-based) ends after epoch ``int(epochs * (k + 1) / S)``, so a 1-based epoch
belongs to the stage whose end it has not passed (350 epochs: 1-87, 88-175, 176-262, 263-350). Each
stage trains with its own

- image size: ``RandCropImage.progress_size[k]``,
- RandAugment magnitude: ``RandAugmentV2.progress_magnitude[k]``,
- head dropout: ``dropout_rate[k]`` of each head with per-stage rates (:mod:`ppssld.arch.head_dropout`).

The stage is a pure function of the epoch, and the training pipeline is rebuilt from the stage's transform
list before the epoch's first batch; with ppssld's augmentation (a function of seed, epoch and sample)
and the checkpoint's random states, a run resumed inside a stage trains exactly as the uninterrupted one.
"""
import copy
import logging
from typing import Any, Dict, List, Optional, Tuple

import paddle.nn as nn

from ppssld.arch.head_dropout import set_stage_dropout, stage_dropout_heads, stage_rates
from ppssld.data.transforms import build_transforms
from ppssld.data.transforms.progressive import PROGRESS_KEYS_BY_TARGET, stage_count, stage_ops, stage_values
from ppssld.utils.config import get
from ppssld.utils.errors import ConfigError

logger = logging.getLogger(__name__)

OPS_KEY = "DataLoader.Train.dataset.transform_ops"
TRAIN_MODE = "progressive"
# datasets whose image size is not the transform list's: progressive training cannot set it
FIXED_SIZE_DATASETS = ("MultiScaleDataset",)


def stage_ends(epochs: int, stages: int) -> List[int]:
    """The last epoch of each stage: ``int(epochs * ((k + 1) / stages))``, PaddleClas's boundaries."""
    return [int(epochs * ((k + 1) / stages)) for k in range(stages)]


def stage_of(epoch: int, epochs: int, stages: int) -> int:
    """The 0-based stage of 1-based ``epoch``: how many stage ends lie before it."""
    return min(stages - 1, sum(1 for end in stage_ends(epochs, stages) if epoch > end))


def is_progressive(config: Dict[str, Any]) -> bool:
    """``Global.train_mode: progressive`` (the value itself is checked on load)."""
    return get(config, "Global.train_mode") == TRAIN_MODE


def check_progressive(config: Dict[str, Any]) -> Optional[int]:
    """Check a progressive config without building; returns its stage count (None when not progressive).

    Raises:
        ConfigError: progressive without a progress list, lists of different lengths, or a dataset that
            sets the image size itself.
    """
    ops = get(config, OPS_KEY)
    stages = stage_count(ops, OPS_KEY)
    if not is_progressive(config):
        if stages is not None:
            logger.warning("%s lists per-stage values (%s) but Global.train_mode is not progressive: they are "
                           "ignored and training uses size / magnitude, as in PaddleClas", OPS_KEY,
                           ", ".join(PROGRESS_KEYS_BY_TARGET.values()))
        return None
    if stages is None:
        raise ConfigError(f"Global.train_mode: progressive needs the stages in {OPS_KEY}: "
                          f"RandCropImage.progress_size (the image size of each stage) and/or "
                          f"RandAugmentV2.progress_magnitude (the RandAugment magnitude of each stage)")
    name = get(config, "DataLoader.Train.dataset.name")
    if name in FIXED_SIZE_DATASETS:
        raise ConfigError(f"Global.train_mode: progressive with DataLoader.Train.dataset.name={name}: that dataset "
                          f"resizes each batch to its sampler's scale, so no stage could set the image size; use "
                          f"ImageNetDataset or drop train_mode")
    epochs = int(get(config, "Global.epochs", 1))
    empty = sorted(set(range(stages)) - {stage_of(e, epochs, stages) for e in range(1, epochs + 1)})
    if empty:
        logger.warning("Global.epochs=%d is too short for %d stages: stage(s) %s get no epoch (stage k ends after "
                       "epoch int(epochs * (k + 1) / %d), as in PaddleClas)", epochs, stages,
                       ", ".join(str(k + 1) for k in empty), stages)
    return stages


class ProgressiveTraining:
    """Sets each epoch's stage: the training dataset's transform chain and the heads' dropout.

    Args:
        ops: ``DataLoader.Train.dataset.transform_ops`` (with its progress lists; not changed).
        epochs: ``Global.epochs``.
        dataset: the training dataset (its ``transform`` is replaced when the stage changes).
        heads: :func:`ppssld.arch.head_dropout.stage_dropout_heads` of the trained model.
    """

    def __init__(self, ops: List[Any], epochs: int, dataset: Any, heads: List[Tuple[str, nn.Layer]]) -> None:
        self.ops, self.epochs, self.dataset, self.heads = copy.deepcopy(ops), int(epochs), dataset, heads
        self.stages = stage_count(ops, OPS_KEY) or 1
        for (name, _), rates in zip(heads, stage_rates(heads)):
            if len(rates) != self.stages:
                raise ConfigError(f"Global.train_mode: progressive: {OPS_KEY} lists {self.stages} stages but the "
                                  f"head {name or 'of the model'} has {len(rates)} dropout rates ({rates}); give "
                                  f"progress lists of {len(rates)} entries")
        self.stage: Optional[int] = None

    def settings(self, epoch: int) -> Dict[str, Any]:
        """``stage`` (0-based), ``size``, ``magnitude`` (when listed) and ``dropout`` (one rate per head) of
        1-based ``epoch``."""
        stage = stage_of(epoch, self.epochs, self.stages)
        values = stage_values(self.ops, stage)
        return {"stage": stage, "size": values.get("size"), "magnitude": values.get("magnitude"),
                "dropout": [rates[stage] for rates in stage_rates(self.heads)]}

    def begin_epoch(self, epoch: int) -> Dict[str, Any]:
        """Switch to ``epoch``'s stage when it is not the current one; returns :meth:`settings`."""
        settings = self.settings(epoch)
        if settings["stage"] != self.stage:
            self.dataset.transform = build_transforms(stage_ops(self.ops, settings["stage"]), OPS_KEY)
            set_stage_dropout(self.heads, settings["stage"])
            self.stage = settings["stage"]
        logger.info("[Train][Epoch %d/%d] progressive stage %d/%d: image size %s, RandAugmentV2 magnitude %s, "
                    "head dropout %s", epoch, self.epochs, settings["stage"] + 1, self.stages, settings["size"],
                    settings["magnitude"], ", ".join(f"{r:g}" for r in settings["dropout"]) or "unchanged")
        return settings


def build_progressive(config: Dict[str, Any], model: nn.Layer, dataset: Any) -> Optional[ProgressiveTraining]:
    """The :class:`ProgressiveTraining` of a progressive config checked by :func:`check_progressive` (None
    otherwise); frozen models keep their dropout."""
    if not is_progressive(config):
        return None
    frozen = tuple(f"{name}." for name in getattr(model, "frozen", None) or [])
    heads = stage_dropout_heads(model, frozen)
    if not heads:
        logger.info("Global.train_mode: progressive: the model has no head with per-stage dropout rates, so "
                    "only the image size and the magnitude change per stage")
    return ProgressiveTraining(get(config, OPS_KEY), int(get(config, "Global.epochs", 1)), dataset, heads)
