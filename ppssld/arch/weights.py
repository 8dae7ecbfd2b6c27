"""Loading weights strictly: every key present, nothing extra, every shape equal.

Files are read by :func:`ppssld.utils.safe_load.safe_load` (data only, unless trusted).
"""
import logging
import os
from typing import Dict, List

import numpy as np
import paddle
import paddle.nn as nn

from ppssld.utils.errors import WeightsError
from ppssld.utils.safe_load import SAFETENSORS_SUFFIX, safe_load

logger = logging.getLogger(__name__)

SUFFIX = ".pdparams"


def resolve_params_path(path: str, where: str = "") -> str:
    """Accept a weights path with or without the ``.pdparams`` (or ``.safetensors``) suffix.

    Raises:
        WeightsError: none of ``path``, ``path + '.pdparams'``, ``path + '.safetensors'`` is a file.
    """
    path = str(path)
    for candidate in (path, path + SUFFIX, path + SAFETENSORS_SUFFIX):
        if os.path.isfile(candidate):
            return candidate
    at = f" ({where})" if where else ""
    raise WeightsError(f"weights file {path!r}{at} not found (also tried {path + SUFFIX!r} and "
                       f"{path + SAFETENSORS_SUFFIX!r}); give a local .pdparams or .safetensors path: "
                       f"ppssld never downloads weights")


def load_state_dict(path: str, where: str = "", trust: bool = False) -> Dict[str, paddle.Tensor]:
    """Read a ``.pdparams`` or ``.safetensors`` file (suffix optional) into a dict, as data only.

    Args:
        path: the file or its prefix.
        where: label for messages.
        trust: read a pickle with ``paddle.load`` (``Global.trust_weights``); only for trusted files.
    """
    real = resolve_params_path(path, where)
    state = safe_load(real, trust=trust)
    if not isinstance(state, dict):
        raise WeightsError(f"{real}: expected a dict of tensors, got {type(state).__name__}")
    return state


def strip_prefix(state: Dict[str, paddle.Tensor], prefix: str) -> Dict[str, paddle.Tensor]:
    """Keep the keys that start with exactly ``prefix + '.'`` and remove that prefix."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in state.items() if k.startswith(head)}


def _shape(value) -> List[int]:
    return list(value.shape)


def load_weights(layer: nn.Layer, source, strict: bool = True, where: str = "", trust: bool = False) -> List[str]:
    """Load weights into ``layer``, checking keys and shapes.

    Args:
        layer: the model.
        source: a path (``.pdparams`` / ``.safetensors``, suffix optional) or a state dict.
        strict: raise on any missing, unexpected or shape-mismatched key; when False those
            are logged as warnings and the matching keys are still loaded.
        where: label for messages (file name or config location).
        trust: see :func:`load_state_dict`.
    Returns:
        The problems found (empty when everything matched).
    Raises:
        WeightsError: when ``strict`` and anything does not match; the message lists it.
    """
    state = load_state_dict(source, where, trust) if isinstance(source, str) else dict(source)
    label = where or (source if isinstance(source, str) else "state dict")
    own = layer.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {_shape(state[k])} vs model {_shape(own[k])}"
                  for k in own if k in state and _shape(state[k]) != _shape(own[k])]
    problems = ([f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected]
                + [f"shape {m}" for m in mismatched])
    if problems:
        listing = "; ".join(problems[:12]) + (f"; ... {len(problems) - 12} more" if len(problems) > 12 else "")
        message = (f"weights {label} do not match the model: {len(missing)} missing, {len(unexpected)} "
                   f"unexpected, {len(mismatched)} shape mismatches: {listing}")
        if strict:
            raise WeightsError(message + ". Pass strict=False (Global.strict_load: False) to load the "
                                         "matching keys anyway.")
        logger.warning(message)
    good = {k: v for k, v in state.items()
            if k in own and _shape(v) == _shape(own[k])}
    layer.set_state_dict(good)
    return problems


def state_to_numpy(state: Dict[str, paddle.Tensor]) -> Dict[str, np.ndarray]:
    """Copy a state dict to numpy arrays (for comparisons in tests and tools)."""
    return {k: np.array(v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()}
