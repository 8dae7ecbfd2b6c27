"""Checkpoints in PaddleClas's layout, written atomically.

``<dir>/<tag>.pdparams`` (model state only, loadable by PaddleClas), ``<tag>.pdopt``
(list of optimizer states, including the LR scheduler) and ``<tag>.pdstates``
(``metric``, ``epoch`` as in PaddleClas, plus ``step``, ``best_metric``, RNG states,
a ``save_id`` shared with ``.pdopt`` and a digest of the parameters). With model EMA, as
PaddleClas, ``<tag>.pdparams`` holds the EMA weights and ``<tag>.pdema`` the trained weights. The three files
are written to temporary names and renamed only once all are complete, so a kill
during a save leaves the previous checkpoint loadable; a set mixed from two saves
(a kill in the microseconds between renames) is detected on load instead of trusted.

Both directions work with PaddleClas's engine: its ``epoch_N``/``latest`` sets (``.pdstates``
holding only ``metric`` and ``epoch``) resume here, and ours resume there (it reads ``epoch``
and the first ``.pdopt`` entry, whose accumulator keys are named as it names them).
"""
import contextlib
import logging
import os
import pickle
import random
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import paddle

from ppssld.arch.weights import load_weights, resolve_params_path
from ppssld.engine import optim_state
from ppssld.utils.errors import WeightsError
from ppssld.utils.fingerprint import state_digest
from ppssld.utils.io import atomic_path, ensure_dir, remove_temporaries
from ppssld.utils.safe_load import restricted_loads, safe_load

logger = logging.getLogger(__name__)

SAVE_ID_KEY = "__ppssld_save_id__"
RNG_GLOBALS = ("paddle.base.libpaddle.GeneratorState",)  # what paddle.get_rng_state() pickles to


def rng_state() -> np.ndarray:
    """Capture the Python, numpy and Paddle random states.

    Returns:
        The pickled states as a uint8 array (paddle.save holds neither the state objects nor bytes).
    """
    blob = pickle.dumps({"python": random.getstate(), "numpy": np.random.get_state(),
                         "paddle": paddle.get_rng_state()})
    return np.frombuffer(blob, dtype=np.uint8).copy()


def set_rng_state(packed: Any, source: str = "checkpoint", trust: bool = False) -> None:
    """Restore what :func:`rng_state` captured.

    The blob is a pickle inside the checkpoint, so it is read with the same allow-list as
    weight files (plus Paddle's generator state) unless ``trust``.
    """
    array = packed.numpy() if hasattr(packed, "numpy") else np.asarray(packed)
    blob = array.astype(np.uint8).tobytes()
    state = pickle.loads(blob) if trust else restricted_loads(blob, f"{source} (rng)", RNG_GLOBALS)  # noqa: S301
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


class _WithLoss:
    """The model's and the training loss's parameters seen as one (loss keys ``loss_func.*``, as in
    PaddleClas), for optimizer states that also hold trainable loss parameters (AFD, MGD)."""

    def __init__(self, model: paddle.nn.Layer, loss: paddle.nn.Layer) -> None:
        self.model, self.loss = model, loss

    def parameters(self) -> List[Any]:
        return list(self.model.parameters()) + list(self.loss.parameters())

    def named_parameters(self) -> List[Tuple[str, Any]]:
        return list(self.model.named_parameters()) + list(self.loss.named_parameters())


def _owners(model: paddle.nn.Layer, loss: Optional[paddle.nn.Layer]) -> Any:
    return model if loss is None or not loss.parameters() else _WithLoss(model, loss)


def optimizer_state_for_save(optimizer: Any, model: paddle.nn.Layer,
                             loss: Optional[paddle.nn.Layer] = None) -> Dict[str, Any]:
    """The optimizer state keyed as PaddleClas keys it (see :mod:`ppssld.engine.optim_state`)."""
    return optim_state.state_for_save(optimizer, _owners(model, loss))


def restore_optimizer_state(optimizer: Any, model: paddle.nn.Layer, state: Dict[str, Any],
                            where: str = "optimizer state", loss: Optional[paddle.nn.Layer] = None) -> None:
    """Load an optimizer state saved by PaddleClas or by ppssld (any version)."""
    optim_state.restore(optimizer, _owners(model, loss), state, where)


def float32_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """PaddleClas's ``save_dtype='float32'``: half-precision tensors (an AMP O2 model) saved as float32,
    so checkpoints load into float32 models for evaluation, fine-tuning and export."""
    return {k: v.astype("float32") if str(getattr(v, "dtype", "")).replace("paddle.", "") in ("float16", "bfloat16")
            else v for k, v in state.items()}


def loss_state(loss: Optional[paddle.nn.Layer], model_state: Dict[str, Any]) -> Dict[str, Any]:
    """The training loss's own state (trainable connectors, generators...), to save beside the model's.

    Raises:
        WeightsError: a loss key equal to a model key (they share one ``.pdparams``).
    """
    state = dict(loss.state_dict()) if loss is not None else {}
    clash = sorted(set(state) & set(model_state))
    if clash:
        raise WeightsError(f"loss and model state keys must differ (they share the .pdparams), both have {clash[:5]}")
    return state


def remove_stale_temporaries(save_dir: str, tag: str) -> int:
    """Delete temporaries a killed save of ``tag`` left behind (``.<tag>.pdparams.*.tmp`` ...).

    Only rank 0 saves and one tag is never saved twice at once, so any such file is a leftover.
    Returns:
        How many were removed.
    """
    removed = sum(remove_temporaries(os.path.join(save_dir, tag + ext))
                  for ext in (".pdparams", ".pdopt", ".pdstates", ".pdema"))
    if removed:
        logger.info("removed %d temporary file(s) of an interrupted save of %s", removed, tag)
    return removed


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
             states: Dict[str, Any], loss: Optional[paddle.nn.Layer] = None, ema: Optional[Any] = None) -> str:
        """Write ``<tag>.pdparams/.pdopt/.pdstates`` atomically.

        Args:
            tag: ``latest``, ``best_model`` or ``epoch_N``.
            model: the (unwrapped) model.
            optimizer: its optimizer (its state includes the LR scheduler), or None.
            states: ``epoch``, ``step``, ``metric``, ``best_metric`` ...; RNG states are added.
            loss: the training loss; its parameters (if any) are saved in the ``.pdparams`` too
                (in the ``.pdema`` with EMA, as PaddleClas).
            ema: the model EMA (:class:`ppssld.engine.ema.ModelEMA`), if any: its weights go to
                ``.pdparams`` and the model's (and the loss's) to ``.pdema``.
        Returns:
            The path prefix written.
        """
        ensure_dir(self.save_dir)
        prefix = os.path.join(self.save_dir, tag)
        remove_stale_temporaries(self.save_dir, tag)
        save_id = f"{time.time_ns()}-{tag}"
        params = float32_state(model.state_dict())
        params.update(loss_state(loss, params))
        params_payload = params if ema is None else float32_state(ema.state_dict())
        opt_payload = [optimizer_state_for_save(optimizer, model, loss)] if optimizer is not None else []
        opt_payload.append({SAVE_ID_KEY: save_id})
        state_payload = {**states, "rng": rng_state(), SAVE_ID_KEY: save_id,
                         "params_digest": state_digest(params_payload)}
        if ema is not None:
            state_payload["ema_digest"] = state_digest(params)
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
             strict: bool = True, restore_rng: bool = True, trust: bool = False,
             loss: Optional[paddle.nn.Layer] = None, ema: Optional[Any] = None) -> Dict[str, Any]:
        """Resume from ``path`` (``.pdparams`` suffix optional).

        Args:
            path: checkpoint prefix, e.g. ``output/DistillationModel/latest``.
            model: model to load into (strict key and shape check).
            optimizer: optimizer to restore, when resuming training.
            strict: strict weight loading.
            restore_rng: restore the random states saved with the checkpoint.
            trust: read the files with ``paddle.load`` (``Global.trust_weights``); by default
                they are read as data only (:mod:`ppssld.utils.safe_load`).
            loss: the training loss whose parameters were saved with the model (resume); without it,
                saved loss parameters (``loss_func.*``) are left out, and logged.
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
        params = safe_load(prefix + ".pdparams", trust=trust)
        opt_list = safe_load(prefix + ".pdopt", trust=trust)
        states = safe_load(prefix + ".pdstates", trust=trust)
        if isinstance(opt_list, dict):  # PaddleClas also accepts a bare optimizer state
            opt_list = [opt_list]
        if not isinstance(states, dict) or not isinstance(opt_list, list):
            raise WeightsError(f"checkpoint {prefix}: .pdstates must hold a dict and .pdopt a list of "
                               f"optimizer states (PaddleClas's layout), got {type(states).__name__} and "
                               f"{type(opt_list).__name__}")
        ids = {states.pop(SAVE_ID_KEY, None)}
        expected = states.pop("params_digest", None)
        if expected is not None and state_digest(params) != expected:
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
            params = _split_ema(prefix, params, ema_digest, ema, trust)
        loss_keys = set(loss.state_dict()) if loss is not None else {k for k in params if k.startswith("loss_func.")}
        loss_params = {k: params.pop(k) for k in list(params) if k in loss_keys}
        if loss is not None and loss_keys:
            load_weights(loss, loss_params, strict=strict, where=prefix + ".pdparams (loss parameters)")
        elif loss_params:
            logger.info("%s: %d loss parameter tensors (loss_func.*) not loaded: no training loss to load them into",
                        prefix, len(loss_params))
        load_weights(model, params, strict=strict, where=prefix + ".pdparams")
        if optimizer is not None and opt_list:
            restore_optimizer_state(optimizer, model, opt_list[0], where=prefix + ".pdopt", loss=loss)
        if restore_rng and "rng" in states:
            set_rng_state(states["rng"], prefix + ".pdstates", trust)
        logger.info("resumed from %s (epoch %s)", prefix, states.get("epoch"))
        return states


def _split_ema(prefix: str, params: Dict[str, Any], ema_digest: Optional[str], ema: Optional[Any],
               trust: bool = False) -> Dict[str, Any]:
    """For a checkpoint of an EMA run: load ``.pdparams`` into ``ema`` and return the ``.pdema`` weights."""
    if not os.path.isfile(prefix + ".pdema"):
        raise WeightsError(f"checkpoint {prefix}: EMA is configured but {prefix}.pdema (the trained weights of an "
                           f"EMA run) is missing; this checkpoint was saved without EMA. Remove the EMA section "
                           f"to resume it, or start the EMA run from it with Global.pretrained_model")
    trained = safe_load(prefix + ".pdema", trust=trust)
    if ema_digest is not None and state_digest(trained) != ema_digest:
        raise WeightsError(f"checkpoint {prefix}: {prefix}.pdema does not belong to {prefix}.pdstates (digest "
                           f"differs); the save was interrupted. Use another checkpoint (e.g. epoch_N)")
    if ema is None:
        logger.warning("checkpoint %s was saved with EMA; resuming without EMA from its trained weights (%s.pdema), "
                       "the EMA weights are dropped", prefix, prefix)
    else:
        ema.set_state_dict(params)
    return trained


def snapshot_interval(value: Any) -> int:
    """``Global.save_interval`` as the trainer uses it: epochs between ``epoch_N`` snapshots, 0 for none.

    Missing (null) is 1, PaddleClas's default. 0 or a negative number means no ``epoch_N`` snapshot at all;
    ``latest`` (every epoch, for resuming) and ``best_model`` are written regardless. PaddleClas 2.5 divides
    by it (0: ``ZeroDivisionError`` at the end of the first epoch; -1: a snapshot every epoch, Python's
    ``n % -1 == 0``); its develop branch skips snapshots for values <= 0, which is the rule here.
    """
    if value is None:
        return 1
    interval = int(value)
    if interval <= 0:
        logger.info("Global.save_interval=%d: no epoch_N snapshots (latest and best_model are still written)",
                    interval)
        return 0
    return interval
