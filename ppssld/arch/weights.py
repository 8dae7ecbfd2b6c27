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


_LOW_PRECISION = ("float16", "bfloat16")


def _dtype(value) -> str:
    return str(value.dtype).replace("paddle.", "")


def _convert_dtypes(state: Dict[str, paddle.Tensor], own: Dict[str, paddle.Tensor], label: str) -> Dict:
    """Cast float32 values into an AMP O2 (float16/bfloat16) model; refuse every other dtype mismatch.

    Raises:
        WeightsError: naming the first mismatched tensor, its file and model dtypes.
    """
    converted = dict(state)
    for key, mine in own.items():
        if key not in state or _dtype(state[key]) == _dtype(mine):
            continue
        theirs = state[key]
        if _dtype(theirs) == "float32" and _dtype(mine) in _LOW_PRECISION:
            value = theirs if isinstance(theirs, paddle.Tensor) else paddle.to_tensor(np.asarray(theirs))
            converted[key] = value.astype(mine.dtype)
            continue
        hint = (" It was saved in half precision (AMP O2 without save_dtype); load it into an AMP O2 "
                "model and save again, which writes float32") if _dtype(theirs) in _LOW_PRECISION else ""
        raise WeightsError(f"weights {label}: tensor {key} is {_dtype(theirs)} in the file but {_dtype(mine)} "
                           f"in the model.{hint}")
    return converted


def load_weights(layer: nn.Layer, source, strict: bool = True, where: str = "", trust: bool = False) -> List[str]:
    """Load weights into ``layer``, checking keys and shapes.

    Args:
        layer: the model.
        source: a path (``.pdparams`` / ``.safetensors``, suffix optional) or a state dict.
        strict: raise on any missing, unexpected or shape-mismatched key; when False those
            are logged as warnings and the matching keys are still loaded. A dtype mismatch is
            always an error, except float32 values into an AMP O2 (float16) model: they are cast.
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
    state = _convert_dtypes(state, own, label)
    good = {k: v for k, v in state.items()
            if k in own and _shape(v) == _shape(own[k])}
    layer.set_state_dict(good)
    return problems


def state_to_numpy(state: Dict[str, paddle.Tensor]) -> Dict[str, np.ndarray]:
    """Copy a state dict to numpy arrays (for comparisons in tests and tools)."""
    return {k: np.array(v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()}
