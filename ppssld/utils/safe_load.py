"""Read Paddle weight files as data: no code from the file runs.

``paddle.load`` unpickles whatever a ``.pdparams`` holds, so opening a stranger's file can run
their code. :func:`safe_load` unpickles with an allow-list of the few globals that Paddle's own
files name (numpy's array and scalar reconstruction, ``numpy.dtype``, ``collections.OrderedDict``
and a handful of builtin containers) and refuses any other global *before* it is imported or
called. It then applies ``paddle.load``'s own post-processing (re-joining the split form of huge
arrays, ``(name, ndarray)`` tuples and bare arrays turned into tensors), so the result equals what
``paddle.load`` returns for every genuine file. ``.safetensors`` files are read without pickle.
``trust=True`` (``Global.trust_weights: True`` or ``--trust-weights``) falls back to ``paddle.load``.
"""
import glob
import io
import logging
import os
import pickle
from typing import Any, Callable, Dict, FrozenSet, Iterable, List

import numpy as np
import paddle

from ppssld.utils.errors import WeightsError
from ppssld.utils.safetensors_io import SUFFIX as SAFETENSORS_SUFFIX
from ppssld.utils.safetensors_io import load_safetensors

logger = logging.getLogger(__name__)

NAME_TABLE = "StructuredToParameterName@@"
SPLIT_INFO = "UnpackBigParamInfor@@"  # Paddle's spelling (protocol 2/3 saves of arrays over 1 GiB)
OPT_IN = ("if you trust this file's author, set Global.trust_weights: True in the config "
          "(or pass --trust-weights) to read it with paddle.load, which runs any code it holds")

_NUMPY_GLOBALS = ("_reconstruct", "scalar")
ALLOWED: FrozenSet[str] = frozenset(
    [f"numpy.{core}.multiarray.{name}" for core in ("core", "_core") for name in _NUMPY_GLOBALS]
    + ["numpy.ndarray", "numpy.dtype", "collections.OrderedDict", "_codecs.encode"]
    + [f"builtins.{name}" for name in ("tuple", "list", "dict", "set", "frozenset", "complex",
                                       "bytearray", "slice", "range")]
    + [f"__builtin__.{name}" for name in ("tuple", "list", "dict", "set", "frozenset", "complex")])


def _eval_data(expression: Any, names: Any) -> np.ndarray:
    """Stand-in for ``eval`` in Paddle's pickled ``DenseTensor`` form ``eval('data', {'data': array})``.

    Only that exact form is accepted; it returns the array without evaluating anything.
    """
    if expression == "data" and isinstance(names, dict) and isinstance(names.get("data"), np.ndarray):
        return names["data"]
    raise pickle.UnpicklingError(f"builtins.eval called with {str(expression)[:60]!r}, not Paddle's "
                                 f"eval('data', {{'data': array}}) tensor form")


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` resolves only allow-listed globals.

    Args:
        file: a binary file object.
        extra: further ``module.name`` globals to allow (e.g. Paddle's RNG state class).
    """

    def __init__(self, file: Any, extra: Iterable[str] = ()) -> None:
        super().__init__(file, encoding="latin1")
        self.allowed = ALLOWED | frozenset(extra)

    def find_class(self, module: str, name: str) -> Any:
        """Return the global if allow-listed; otherwise raise before importing anything."""
        full = f"{module}.{name}"
        if full in ("builtins.eval", "__builtin__.eval"):
            return _eval_data
        if full not in self.allowed:
            raise _RefusedGlobal(full)
        return super().find_class(module, name)


def restricted_loads(data: bytes, source: str, extra: Iterable[str] = ()) -> Any:
    """Unpickle ``data`` with the allow-list (used for blobs nested inside checkpoints).

    Raises:
        WeightsError: the pickle names a global outside the allow-list, or is not a pickle.
    """
    return _unpickle(io.BytesIO(data), source, extra)


def _unpickle(handle: Any, source: str, extra: Iterable[str] = ()) -> Any:
    try:
        return RestrictedUnpickler(handle, extra).load()
    except _RefusedGlobal as exc:
        raise WeightsError(f"{source}: refused to load: the file asks to import {exc.name}, which Paddle's "
                           f"weight files never contain (it could run code). Nothing from the file was run; "
                           f"{OPT_IN}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            ImportError) as exc:
        raise WeightsError(f"{source}: not a pickled Paddle state dict ({type(exc).__name__}: {exc}); "
                           f"safe loading reads paddle.save pickles and .safetensors files only; "
                           f"{OPT_IN}") from None


def _join_split_arrays(obj: Dict[str, Any]) -> Dict[str, Any]:
    """Re-assemble arrays Paddle split into ``key@@.i`` parts (protocol 2/3 saves over 1 GiB)."""
    info = obj.pop(SPLIT_INFO)
    for key, entry in info.items():
        parts = [obj.pop(part) for part in entry["slices"]]
        obj[key] = np.concatenate(parts).reshape(entry["OriginShape"])
    return obj


def _contains(obj: Any, test: Callable[[Any], bool]) -> bool:
    if test(obj):
        return True
    if isinstance(obj, dict):
        return any(_contains(v, test) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_contains(v, test) for v in obj)
    return False


def _convert(obj: Any, test: Callable[[Any], bool], convert: Callable[[Any], Any]) -> Any:
    """Replace every node passing ``test`` by ``convert(node)`` in dicts, lists, tuples and sets."""
    if test(obj):
        return convert(obj)
    kind = type(obj)
    if isinstance(obj, dict) or kind is list:
        keys = range(len(obj)) if kind is list else list(obj.keys())
        for key in keys:
            obj[key] = _convert(obj[key], test, convert)
        return obj
    if kind in (tuple, set):
        return kind(_convert(list(obj), test, convert))
    return obj


def _is_named_array(obj: Any) -> bool:
    return type(obj) is tuple and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray)


def _named_tensor(name: str, array: np.ndarray) -> paddle.Tensor:
    tensor = paddle.to_tensor(array)
    tensor.name = name
    return tensor


def _post_process(obj: Any, return_numpy: bool) -> Any:
    """``paddle.load``'s treatment of an unpickled object (dygraph mode)."""
    if isinstance(obj, dict) and SPLIT_INFO in obj:
        obj = _join_split_arrays(obj)
    if isinstance(obj, dict) and NAME_TABLE in obj:
        table = obj.pop(NAME_TABLE)
        for key, name in table.items():
            if isinstance(obj.get(key), np.ndarray):
                obj[key] = obj[key] if return_numpy else _named_tensor(name, obj[key])
        return obj
    if _contains(obj, _is_named_array):
        return _convert(obj, _is_named_array, lambda t: t[1] if return_numpy else _named_tensor(*t))
    return _convert(obj, lambda x: isinstance(x, np.ndarray),
                    lambda a: a if return_numpy else paddle.to_tensor(a))


def check_inference_side_files(prefix: str) -> List[str]:
    """Check the pickles ``paddle.jit.load(prefix)`` would unpickle, before it does.

    Legacy (non-PIR) saved models carry ``<prefix>*.pdiparams.info``, a pickled dict of variable
    facts that ``paddle.jit.load`` reads with plain ``pickle``; each must pass the allow-list.

    Returns:
        The files checked.
    Raises:
        WeightsError: a side file names a global outside the allow-list (nothing was run).
    """
    files = sorted(glob.glob(glob.escape(prefix) + "*.pdiparams.info"))
    for path in files:
        with open(path, "rb") as handle:
            _unpickle(handle, path)
    return files


def safe_load(path: str, trust: bool = False, return_numpy: bool = False) -> Any:
    """Load a ``paddle.save`` file (``.pdparams``, ``.pdopt``, ``.pdstates``) or a ``.safetensors`` file.

    Args:
        path: the file.
        trust: read a pickle with ``paddle.load`` (runs whatever it holds); only for trusted files.
        return_numpy: numpy arrays instead of tensors, as ``paddle.load(..., return_numpy=True)``.
    Returns:
        What ``paddle.load`` returns for the file.
    Raises:
        WeightsError: missing file, a global outside the allow-list (nothing was run), or not
            a Paddle pickle; the message names the file and says how to opt in.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} not found")
    if path.endswith(SAFETENSORS_SUFFIX):
        return load_safetensors(path, return_numpy)
    if trust:
        logger.warning("%s: loaded with paddle.load (trusted: Global.trust_weights / --trust-weights)", path)
        return paddle.load(path, return_numpy=return_numpy)
    with open(path, "rb") as handle:
        obj = _unpickle(handle, path)
    try:
        return _post_process(obj, return_numpy)
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise WeightsError(f"{path}: malformed Paddle state dict ({type(exc).__name__}: {exc})") from None
