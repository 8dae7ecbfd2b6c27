"""Checkpoints in PaddleClas's layout, written atomically.

``<dir>/<tag>.pdparams`` (model state only, loadable by PaddleClas), ``<tag>.pdopt``
(list of optimizer states, including the LR scheduler) and ``<tag>.pdstates``
(``metric``, ``epoch`` as in PaddleClas, plus ``step``, ``best_metric``, RNG states,
a ``save_id`` shared with ``.pdopt`` and a digest of the parameters). With model EMA, as
PaddleClas, ``<tag>.pdparams`` holds the EMA weights and ``<tag>.pdema`` the trained weights. The three files
are written to temporary names and renamed only once all are complete, so a kill
during a save leaves the previous checkpoint loadable; a set mixed from two saves
(a kill in the microseconds between renames) is detected on load instead of trusted.
"""
import contextlib
import hashlib
import logging
import os
import pickle
import random
import time
from typing import Any, Dict, Optional

import numpy as np
import paddle

from ppssld.arch.weights import load_weights, resolve_params_path
from ppssld.utils.errors import WeightsError
from ppssld.utils.io import atomic_path

logger = logging.getLogger(__name__)

SAVE_ID_KEY = "__ppssld_save_id__"


def rng_state() -> np.ndarray:
    """Capture the Python, numpy and Paddle random states.

    Returns:
        The pickled states as a uint8 array (paddle.save holds neither the state objects nor bytes).
    """
    blob = pickle.dumps({"python": random.getstate(), "numpy": np.random.get_state(),
                         "paddle": paddle.get_rng_state()})
    return np.frombuffer(blob, dtype=np.uint8).copy()


def set_rng_state(packed: Any) -> None:
    """Restore what :func:`rng_state` captured."""
    array = packed.numpy() if hasattr(packed, "numpy") else np.asarray(packed)
    state = pickle.loads(array.astype(np.uint8).tobytes())  # noqa: S301 - our own checkpoint, already a pickle via paddle.load
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


def _rename_accumulators(state: Dict[str, Any], mapping: Dict[str, str]) -> Dict[str, Any]:
    """Rename optimizer-state keys ``<param name>_<accumulator>`` through ``mapping``.

    Paddle keys accumulators by generated parameter names (``conv2d_54.w_0``), which change
    with construction order; checkpoints store the structured names (``Student.conv.weight``)
    instead so they load into any process. Keys matching no parameter are kept as they are.
    """
    ordered = sorted(mapping, key=len, reverse=True)
    renamed = {}
    for key, value in state.items():
        target = key
        for old in ordered:
            if key.startswith(old + "_"):
                target = mapping[old] + key[len(old):]
                break
        renamed[target] = value
    return renamed


def optimizer_state_for_save(optimizer: Any, model: paddle.nn.Layer) -> Dict[str, Any]:
    """The optimizer state with accumulators keyed by structured parameter names."""
    mapping = {p.name: n for n, p in model.named_parameters()}
    return _rename_accumulators(optimizer.state_dict(), mapping)


def restore_optimizer_state(optimizer: Any, model: paddle.nn.Layer, state: Dict[str, Any]) -> None:
    """Load an optimizer state saved by ppssld (structured names) or by PaddleClas (generated names)."""
    mapping = {n: p.name for n, p in model.named_parameters()}
    optimizer.set_state_dict(_rename_accumulators(state, mapping))


def digest(state: Dict[str, Any]) -> str:
    """A BLAKE2 digest of a state dict's names and values (detects mixed checkpoint files)."""
    hasher = hashlib.blake2b(digest_size=16)
    for key in sorted(state):
        value = state[key]
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        hasher.update(key.encode("utf-8"))
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()


def _tag_path(path: str) -> str:
    return path[: -len(".pdparams")] if path.endswith(".pdparams") else path


class Checkpointer:
    """Saves and restores training state under one directory.

    Args:
        save_dir: where ``latest``, ``best_model`` and ``epoch_N`` files go.
    """

    def __init__(self, save_dir: str) -> None:
        self.save_dir = save_dir

    def save(self, tag: str, model: paddle.nn.Layer, optimizer: Optional[paddle.optimizer.Optimizer],
             states: Dict[str, Any], ema: Optional[Any] = None) -> str:
        """Write ``<tag>.pdparams/.pdopt/.pdstates`` atomically.

        Args:
            tag: ``latest``, ``best_model`` or ``epoch_N``.
            model: the (unwrapped) model.
            optimizer: its optimizer (its state includes the LR scheduler), or None.
            states: ``epoch``, ``step``, ``metric``, ``best_metric`` ...; RNG states are added.
            ema: the model EMA (:class:`ppssld.engine.ema.ModelEMA`), if any: its weights go to
                ``.pdparams`` and the model's to ``.pdema``.
        Returns:
            The path prefix written.
        """
        os.makedirs(self.save_dir, exist_ok=True)
        prefix = os.path.join(self.save_dir, tag)
        save_id = f"{time.time_ns()}-{tag}"
        params = dict(model.state_dict())
        params_payload = params if ema is None else dict(ema.state_dict())
        opt_payload = [optimizer_state_for_save(optimizer, model)] if optimizer is not None else []
        opt_payload.append({SAVE_ID_KEY: save_id})
        state_payload = {**states, "rng": rng_state(), SAVE_ID_KEY: save_id,
                         "params_digest": digest(params_payload)}
        if ema is not None:
            state_payload["ema_digest"] = digest(params)
        with contextlib.ExitStack() as stack:
            if ema is not None:
                paddle.save(params, stack.enter_context(atomic_path(prefix + ".pdema")))
            paddle.save(opt_payload, stack.enter_context(atomic_path(prefix + ".pdopt")))
            paddle.save(state_payload, stack.enter_context(atomic_path(prefix + ".pdstates")))
            paddle.save(params_payload, stack.enter_context(atomic_path(prefix + ".pdparams")))
        logger.info("saved checkpoint %s", prefix)
        return prefix

    @staticmethod
    def load(path: str, model: paddle.nn.Layer, optimizer: Optional[paddle.optimizer.Optimizer] = None,
             strict: bool = True, restore_rng: bool = True, ema: Optional[Any] = None) -> Dict[str, Any]:
        """Resume from ``path`` (``.pdparams`` suffix optional).

        Args:
            path: checkpoint prefix, e.g. ``output/DistillationModel/latest``.
            model: model to load into (strict key and shape check).
            optimizer: optimizer to restore, when resuming training.
            strict: strict weight loading.
            restore_rng: restore the random states saved with the checkpoint.
            ema: the model EMA to restore from ``.pdparams`` (the model then loads ``.pdema``).
        Returns:
            The saved states (``epoch``, ``step``, ``best_metric``, ...).
        Raises:
            WeightsError: missing files, or files from different saves.
        """
        prefix = _tag_path(resolve_params_path(path, "Global.checkpoints"))
        for ext in (".pdopt", ".pdstates"):
            if not os.path.isfile(prefix + ext):
                raise WeightsError(f"checkpoint {prefix}: {prefix + ext} is missing; a resumable checkpoint "
                                   f"has .pdparams, .pdopt and .pdstates")
        params = paddle.load(prefix + ".pdparams")
        opt_list = paddle.load(prefix + ".pdopt")
        states = paddle.load(prefix + ".pdstates")
        ids = {states.pop(SAVE_ID_KEY, None)}
        expected = states.pop("params_digest", None)
        if expected is not None and digest(params) != expected:
            raise WeightsError(f"checkpoint {prefix}: {prefix}.pdparams does not belong to {prefix}.pdstates "
                               f"(parameter digest differs); the save was interrupted. Use another checkpoint "
                               f"(e.g. epoch_N)")
        if opt_list and isinstance(opt_list[-1], dict) and SAVE_ID_KEY in opt_list[-1]:
            ids.add(opt_list.pop()[SAVE_ID_KEY])
        ids.discard(None)
        if len(ids) > 1:
            raise WeightsError(f"checkpoint {prefix}: its .pdparams, .pdopt and .pdstates come from different "
                               f"saves ({sorted(ids)}); the save was interrupted. Use another checkpoint "
                               f"(e.g. epoch_N)")
        ema_digest = states.pop("ema_digest", None)
        if ema_digest is not None or ema is not None:
            params = _split_ema(prefix, params, ema_digest, ema)
        load_weights(model, params, strict=strict, where=prefix + ".pdparams")
        if optimizer is not None and opt_list:
            restore_optimizer_state(optimizer, model, opt_list[0])
        if restore_rng and "rng" in states:
            set_rng_state(states["rng"])
        logger.info("resumed from %s (epoch %s)", prefix, states.get("epoch"))
        return states


def _split_ema(prefix: str, params: Dict[str, Any], ema_digest: Optional[str], ema: Optional[Any]) -> Dict[str, Any]:
    """For a checkpoint of an EMA run: load ``.pdparams`` into ``ema`` and return the ``.pdema`` weights."""
    if not os.path.isfile(prefix + ".pdema"):
        raise WeightsError(f"checkpoint {prefix}: EMA is configured but {prefix}.pdema (the trained weights of an "
                           f"EMA run) is missing; this checkpoint was saved without EMA. Remove the EMA section "
                           f"to resume it, or start the EMA run from it with Global.pretrained_model")
    trained = paddle.load(prefix + ".pdema")
    if ema_digest is not None and digest(trained) != ema_digest:
        raise WeightsError(f"checkpoint {prefix}: {prefix}.pdema does not belong to {prefix}.pdstates (digest "
                           f"differs); the save was interrupted. Use another checkpoint (e.g. epoch_N)")
    if ema is None:
        logger.warning("checkpoint %s was saved with EMA; resuming without EMA from its trained weights (%s.pdema), "
                       "the EMA weights are dropped", prefix, prefix)
    else:
        ema.set_state_dict(params)
    return trained
