"""Heads whose dropout rate is stepped per stage of progressive training.

PaddleClas's rule: a layer whose class is named ``Head`` with a list ``dropout_rate`` (one rate per
stage) and an ``nn.Dropout`` in ``_dropout``. In the zoo that is EfficientNetV2_S's head (rates
``linspace(0.1, 0.3, 4)``); EfficientNetV2_M/L/XL have one scalar rate and keep it.
"""
import logging
from typing import Iterable, List, Tuple

import paddle.nn as nn

logger = logging.getLogger(__name__)


def stage_dropout_heads(model: nn.Layer, skip_prefixes: Iterable[str] = ()) -> List[Tuple[str, nn.Layer]]:
    """``(name, layer)`` of every head of ``model`` with per-stage dropout rates.

    Args:
        model: the model (a DistillationModel or a backbone).
        skip_prefixes: sublayer name prefixes left out (frozen models: ``"Teacher."``).
    """
    skip = tuple(skip_prefixes)
    heads = []
    for name, layer in model.named_sublayers(include_self=True):
        if skip and (name + ".").startswith(skip):
            continue
        rates = getattr(layer, "dropout_rate", None)
        if type(layer).__name__ == "Head" and isinstance(rates, (list, tuple)) and isinstance(
                getattr(layer, "_dropout", None), nn.Dropout):
            heads.append((name, layer))
    return heads


def stage_rates(heads: List[Tuple[str, nn.Layer]]) -> List[List[float]]:
    """The per-stage rates of each head, as floats."""
    return [[float(r) for r in layer.dropout_rate] for _, layer in heads]


def set_stage_dropout(heads: List[Tuple[str, nn.Layer]], stage: int) -> List[float]:
    """Set each head's dropout to its rate of ``stage`` (0-based); returns the rates set."""
    rates = []
    for _, layer in heads:
        rate = float(layer.dropout_rate[stage])
        layer._dropout.p = rate
        rates.append(rate)
    return rates
