"""``.safetensors`` weights: read and written through ``safetensors.numpy`` (no pickle anywhere).

A ``.safetensors`` file holds a flat ``name -> array`` mapping, which is exactly a Paddle model
state dict; optimizer states and checkpoints (nested, with scheduler numbers) stay ``.pdopt`` /
``.pdstates``.
"""
import logging
import os
from typing import Any, Dict, Mapping

import numpy as np
import paddle

from ppssld.utils.errors import WeightsError
from ppssld.utils.io import atomic_path

logger = logging.getLogger(__name__)

SUFFIX = ".safetensors"


def load_safetensors(path: str, return_numpy: bool = False) -> Dict[str, Any]:
    """Read a ``.safetensors`` file into a dict of tensors (or numpy arrays).

    Raises:
        WeightsError: the file is not a valid safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arrays = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable .safetensors file ({exc})") from None
    return arrays if return_numpy else {k: paddle.to_tensor(v) for k, v in arrays.items()}


def to_arrays(state: Mapping[str, Any], source: str) -> Dict[str, np.ndarray]:
    """Contiguous numpy copies of a state dict's tensors, keys unchanged.

    Raises:
        WeightsError: a value that is not a tensor or array (safetensors holds tensors only).
    """
    arrays = {}
    for key, value in state.items():
        if hasattr(value, "numpy"):
            value = value.numpy()
        if not isinstance(value, np.ndarray):
            raise WeightsError(f"{source}: value of {key!r} is a {type(value).__name__}, not a tensor; "
                               f".safetensors holds a flat name -> tensor state dict only")
        arrays[str(key)] = np.ascontiguousarray(value)
    return arrays


def save_safetensors(state: Mapping[str, Any], path: str, source: str = "state dict") -> str:
    """Write ``state`` (tensors or arrays) to ``path`` atomically, same keys.

    Returns:
        ``path``.
    """
    from safetensors.numpy import save_file

    arrays = to_arrays(state, source)
    with atomic_path(path) as tmp:
        save_file(arrays, tmp, metadata={"format": "paddle", "written_by": "ppssld"})
    logger.info("wrote %s (%d tensors)", path, len(arrays))
    return path


def convert_weights(src: str, dst: str, trust: bool = False) -> Dict[str, np.ndarray]:
    """Convert a state dict between ``.pdparams`` and ``.safetensors`` (direction from ``dst``'s suffix).

    Args:
        src: the input file; a ``.pdparams`` is read safely unless ``trust``.
        dst: ``*.safetensors`` or ``*.pdparams``; written atomically.
        trust: read ``src`` with ``paddle.load`` (only for a file whose author you trust).
    Returns:
        The arrays written.
    Raises:
        WeightsError: unreadable input, a non-flat state dict, or an unknown output suffix.
    """
    from ppssld.utils.safe_load import safe_load

    state = safe_load(src, trust=trust, return_numpy=True)
    if not isinstance(state, dict):
        raise WeightsError(f"{src}: expected a dict of tensors, got {type(state).__name__}")
    arrays = to_arrays(state, src)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise WeightsError(f"{dst}: output would overwrite the input")
    if dst.endswith(SUFFIX):
        save_safetensors(arrays, dst, src)
    elif dst.endswith(".pdparams"):
        with atomic_path(dst) as tmp:
            paddle.save({k: paddle.to_tensor(v) for k, v in arrays.items()}, tmp)
        logger.info("wrote %s (%d tensors)", dst, len(arrays))
    else:
        raise WeightsError(f"{dst}: the output must end in {SUFFIX} or .pdparams")
    return arrays
