"""Build every training piece from a validated config; validate component names on load."""
import logging
import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import paddle

from ppssld.arch.build import (arch_class_num, build_model, check_arch_section, check_compared_class_counts,
                               infer_model_name, names_after)
from ppssld.slim.apply import quantize_student, with_fresh_quantizers
from ppssld.slim.settings import check_slim
from ppssld.utils.checks import is_int
from ppssld.utils.config import get, global_seed, output_dir, trust_weights
from ppssld.teacher.choose import attach_teacher_engines
from ppssld.teacher.inputs import attach_teacher_inputs, check_teacher_inputs
from ppssld.engine import distributed
from ppssld.engine.checkpoint import Checkpointer
from ppssld.engine.progressive import build_progressive, check_progressive
from ppssld.engine.to_static import convert_trained_models
from ppssld.engine.trainer import FOLDER_WHAT, Trainer
from ppssld.utils.errors import ConfigError
from ppssld.utils.folder_lock import lock_folder

logger = logging.getLogger(__name__)

AMP_LEVELS = ("O1", "O2")


def validate(config: Dict[str, Any]) -> None:
    """Check component names and parameters (losses, metrics, optimizer, data) without building.

    Raises:
        ConfigError: naming the key and the closest valid names.
    """
    from ppssld.data.datasets.imagenet import validate_dataset_config
    from ppssld.loss import validate_loss_config
    from ppssld.metric import validate_metric_config
    from ppssld.optim import validate_optimizer_config

    if "Arch" not in config:
        raise ConfigError("the config has no Arch section (the model to train)")
    check_arch_section(config["Arch"])
    check_slim(config)
    check_teacher_inputs(config)
    for mode in ("Train", "Eval"):
        if get(config, f"Loss.{mode}") is not None:
            pairs = validate_loss_config(config["Loss"][mode], f"Loss.{mode}")
            if mode == "Train":  # a student of 12 classes distilled from a teacher of 10: refused before building
                check_compared_class_counts(config["Arch"], pairs)
        if get(config, f"Metric.{mode}") is not None:
            validate_metric_config(config["Metric"][mode], f"Metric.{mode}")
        if get(config, f"DataLoader.{mode}.dataset") is not None:
            validate_dataset_config(config["DataLoader"][mode]["dataset"], f"DataLoader.{mode}.dataset")
    check_progressive(config)
    if get(config, "Optimizer") is not None:
        validate_optimizer_config(config["Optimizer"], "Optimizer")
    level = get(config, "AMP.level", "O1")
    if get(config, "AMP.use_amp", False) and level not in AMP_LEVELS:
        raise ConfigError(f"AMP.level must be one of {AMP_LEVELS}, got {level!r}")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and Paddle (same seed on every rank: DataParallel also syncs at start)."""
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def save_dir(config: Dict[str, Any]) -> str:
    """``<output_dir>/<Arch.name>``, PaddleClas's checkpoint folder."""
    return os.path.join(output_dir(config), config["Arch"]["name"])


def prepare_runtime(config: Dict[str, Any]) -> None:
    """Device (missing ``Global.device``: a visible GPU, else the CPU), process group and seed from ``Global``."""
    distributed.init(get(config, "Global.device"))
    seed_everything(global_seed(config))


def _provided_models(arch: Dict[str, Any], state_keys: Any) -> List[str]:
    """Names of the models whose weights a whole-model state dict holds (any name for a plain model)."""
    keys = list(state_keys)
    if arch.get("name") != "DistillationModel":
        return ["Arch"] if keys else []
    names = [k for item in arch.get("models") or [] if isinstance(item, dict) for k in item]
    return [n for n in names if any(k.startswith(n + ".") for k in keys)]


def build_full_model(config: Dict[str, Any], resume: bool = False) -> paddle.nn.Layer:
    """The model of ``Arch`` plus ``Global.pretrained_model`` (strict unless ``Global.strict_load: False``).

    A model whose weights ``Global.pretrained_model`` (or, with ``resume``, ``Global.checkpoints``)
    holds needs no ``pretrained`` of its own: a frozen teacher is then loaded from that file.
    """
    from ppssld.arch.weights import load_state_dict, load_weights

    strict = bool(get(config, "Global.strict_load", True))
    trust = trust_weights(config)
    seed = global_seed(config)
    pretrained = get(config, "Global.pretrained_model")
    checkpoints = get(config, "Global.checkpoints") if resume else None
    state, provided = None, []
    if checkpoints:
        provided = _provided_models(config["Arch"], load_state_dict(str(checkpoints), "Global.checkpoints", trust))
    elif pretrained:
        state = load_state_dict(str(pretrained), f"Global.pretrained_model={pretrained}", trust)
        provided = _provided_models(config["Arch"], state)
    if get(config, "Global.soft_label_cache"):  # the teacher is read from the cache, never built
        from ppssld.cache.reader import build_cached_model, drop_teacher_weights

        model = build_cached_model(config, lambda key: build_model(config["Arch"], strict=strict, only=key,
                                                                     provided=provided, trust=trust, seed=seed))
        state = drop_teacher_weights(config, state)
    else:
        model = build_model(config["Arch"], strict=strict, load_pretrained=True, provided=provided, trust=trust,
                            seed=seed)
    quantize_student(model, config)  # Slim.quant: fake-quant layers in the student, before any checkpoint loads
    if state is not None:
        where = f"Global.pretrained_model={pretrained}"
        load_weights(model, with_fresh_quantizers(model, state, where), strict=strict, where=where)
    attach_teacher_inputs(model, config)  # before the engines: they run at the teacher's own input shape
    attach_teacher_engines(model, config)
    convert_trained_models(model, config)
    return model


def build_eval_model(config: Dict[str, Any]) -> paddle.nn.Layer:
    """Only the model evaluation runs: the infer model (student) of a DistillationModel, or the plain model.

    ``Global.pretrained_model`` may hold the whole DistillationModel (``Teacher.*``,
    ``Student.*``: the student's part is taken) or the student alone (PaddleClas's
    ``*_student.pdparams``); other models are neither built nor read into a model.

    Returns:
        A plain model, or a one-model DistillationModel (outputs keyed by the infer model's name,
        as ``DistillationTopkAcc`` expects).
    """
    from ppssld.arch.distillation import DistillationModel
    from ppssld.arch.weights import load_state_dict, load_weights, strip_prefix

    arch = config["Arch"]
    strict = bool(get(config, "Global.strict_load", True))
    pretrained = get(config, "Global.pretrained_model")
    name = infer_model_name(arch)
    where = f"Global.pretrained_model={pretrained}"
    trust = trust_weights(config)
    state = load_state_dict(str(pretrained), where, trust) if pretrained else None
    if name is None:
        model = build_model(arch, strict=strict, provided=["Arch"] if state is not None else [], trust=trust)
        quantize_student(model, config)
        if state is not None:
            load_weights(model, with_fresh_quantizers(model, state, where), strict=strict, where=where)
        return model
    layer = build_model(arch, strict=strict, only=name, load_pretrained=state is None, trust=trust)
    quantize_student(layer, config)
    if state is not None:
        own = strip_prefix(state, name)
        if own:
            logger.info("%s: evaluating its %s.* weights (%d of %d tensors)", where, name, len(own), len(state))
        load_weights(layer, with_fresh_quantizers(layer, own or state, where), strict=strict,
                     where=f"{where} ({name}.*)" if own else where)
    return DistillationModel({name: layer}, infer_model_name=name)


def eval_amp(config: Dict[str, Any], model: paddle.nn.Layer) -> tuple:
    """``(model, amp)`` for evaluation: with AMP O2 the model is decorated (float16, float32
    ``state_dict``) and evaluated under O2 autocast, as PaddleClas's eval engine does."""
    amp, _ = _amp_options(config)
    if amp and amp["level"] == "O2":
        model = paddle.amp.decorate(models=model, level="O2", save_dtype="float32")
    return model, amp


def _amp_options(config: Dict[str, Any]) -> tuple:
    if not get(config, "AMP.use_amp", False):
        return None, None
    if not paddle.device.is_compiled_with_cuda() or "gpu" not in paddle.device.get_device():
        logger.warning("AMP.use_amp is True but training runs on CPU: AMP is ignored (float32 is used)")
        return None, None
    amp = {"level": get(config, "AMP.level", "O1"), "black_list": ["softmax", "log_softmax", "cross_entropy"]}
    scaler = paddle.amp.GradScaler(init_loss_scaling=float(get(config, "AMP.scale_loss", 1.0)),
                                   use_dynamic_loss_scaling=bool(get(config, "AMP.use_dynamic_loss_scaling", True)))
    return amp, scaler


def decorate_o2(model: paddle.nn.Layer, optimizer: Any) -> tuple:
    """AMP O2: float16 parameters with float32 master weights; ``state_dict()`` (so every
    checkpoint) stays float32, PaddleClas's ``save_dtype``, so it loads for eval, fine-tuning and export."""
    return paddle.amp.decorate(models=model, optimizers=optimizer, level="O2", master_weight=True,
                               save_dtype="float32")


def _visualdl(config: Dict[str, Any]) -> Optional[Any]:
    if not get(config, "Global.use_visualdl", False) or not distributed.is_main():
        return None
    from visualdl import LogWriter

    return LogWriter(logdir=os.path.join(output_dir(config), "vdl"))


def build_eval_pieces(config: Dict[str, Any]) -> tuple:
    """(eval loader, metrics, eval loss) from ``DataLoader.Eval``, ``Metric.Eval`` and ``Loss.Eval``."""
    from ppssld.data.loading.loader import build_dataloader
    from ppssld.loss import build_loss
    from ppssld.metric import build_metrics

    if get(config, "DataLoader.Eval") is None:
        return None, [], None
    seed = global_seed(config)
    loader, _ = build_dataloader(config["DataLoader"]["Eval"], "eval", seed=seed, where="DataLoader.Eval",
                                 class_num=arch_class_num(config["Arch"]))
    metric_cfg = get(config, "Metric.Eval") or _default_metrics(config)
    metrics = build_metrics(metric_cfg, "Metric.Eval")
    loss_cfg = get(config, "Loss.Eval")
    eval_loss = build_loss(loss_cfg, "Loss.Eval") if loss_cfg else None
    return loader, metrics, eval_loss


def _default_metrics(config: Dict[str, Any]) -> list:
    name = infer_model_name(config["Arch"])
    if name is None:
        return [{"TopkAcc": {"topk": [1, 5]}}]
    return [{"DistillationTopkAcc": {"model_key": name, "topk": [1, 5]}}]


def update_frequency(config: Dict[str, Any], batches: int) -> int:
    """``Global.update_freq``: micro-batches summed into one optimizer update (gradient accumulation).

    As PaddleClas, the loss of each micro-batch is divided by it, the LR schedule counts updates, and an
    epoch shorter than one update falls back to 1 (with a warning).
    """
    freq = get(config, "Global.update_freq", 1)
    if not is_int(freq) or freq < 1:
        raise ConfigError(f"Global.update_freq must be an int >= 1 (micro-batches per optimizer update), got {freq!r}")
    if freq > batches:
        logger.warning("Global.update_freq=%d exceeds the %d batches of an epoch; using 1 (as PaddleClas)",
                       freq, batches)
        return 1
    if freq > 1:
        logger.info("Global.update_freq=%d: one optimizer update every %d batches (effective batch %d x the "
                    "sampler batch); %d updates per epoch", freq, freq, freq, batches // freq)
    return freq


def build_trainer(config: Dict[str, Any]) -> Trainer:
    """Everything :class:`Trainer` needs, built from ``config`` (which is not mutated).

    Returns:
        A trainer, already resumed when ``Global.checkpoints`` is set.
    Raises:
        OutputError: another run writes ``<Global.output_dir>/<Arch.name>`` (named: pid, host, start time).
    """
    validate(config)
    # one writer per checkpoint folder: a second run with the same Global.output_dir and Arch.name is refused
    # before anything is built (rank 0 holds the lock for the job; released when fit ends)
    lock = lock_folder(save_dir(config), FOLDER_WHAT)
    try:
        return _build_trainer(config, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build_trainer(config: Dict[str, Any], lock: Any) -> Trainer:
    from ppssld.data.batch.ops import build_batch_transform
    from ppssld.data.loading.loader import build_dataloader
    from ppssld.loss import build_loss, check_mixed_label_support
    from ppssld.metric import build_metrics
    from ppssld.optim import build_optimizer

    prepare_runtime(config)
    from ppssld.engine.ema import build_ema
    from ppssld.engine.sync_bn import apply_sync_bn
    from ppssld.metric import primary_key

    checkpoints = get(config, "Global.checkpoints")
    model = apply_sync_bn(config, build_full_model(config, resume=bool(checkpoints)))
    seed = global_seed(config)
    # the training stream (dropout, drop-path) starts from the seed whichever models were built: a teacher
    # read from Global.soft_label_cache is not built, and must not change the student's training
    paddle.seed(seed)
    if get(config, "DataLoader.Train") is None:
        raise ConfigError("DataLoader.Train is missing: nothing to train on")
    train_loader, sampler = build_dataloader(config["DataLoader"]["Train"], "train", seed=seed,
                                             where="DataLoader.Train", class_num=arch_class_num(config["Arch"]))
    if get(config, "Loss.Train") is None:
        raise ConfigError("Loss.Train is missing: list at least one loss")
    with names_after(model):  # the loss's parameters must not repeat a model parameter's name
        loss_fn = build_loss(config["Loss"]["Train"], "Loss.Train")
    if get(config, "Global.soft_label_cache"):
        from ppssld.cache.reader import attach

        train_loader = attach(config, model, train_loader, sampler, loss_fn)
    elif getattr(model, "ensemble", None) is not None:
        from ppssld.cache.rules import check_losses

        check_losses(getattr(loss_fn, "loss_func", []), model.ensemble.name, "Loss.Train", source="ensemble")
        logger.info("teacher ensemble %s", model.ensemble.describe())
    batch_transform = build_batch_transform(get(config, "DataLoader.Train.dataset.batch_transform_ops"), seed,
                                            distributed.rank())
    if batch_transform is not None:
        check_mixed_label_support(loss_fn, "Loss.Train")
        if get(config, "Metric.Train"):
            logger.warning("Metric.Train is computed on the batches batch_transform_ops leaves unmixed only "
                           "(PaddleClas drops its train accuracy when batch operators are on)")
    epochs = int(get(config, "Global.epochs", 1))
    update_freq = update_frequency(config, len(train_loader))
    # the loss's own parameters (MGD generator, PEFD projectors) are trained too, as in PaddleClas
    optimizer, scheduler = build_optimizer(config.get("Optimizer") or {},
                                           list(model.named_parameters()) + list(loss_fn.named_parameters()),
                                           epochs=epochs, steps_per_epoch=len(train_loader) // update_freq,
                                           where="Optimizer")
    amp, scaler = _amp_options(config)
    if amp and amp["level"] == "O2":
        model, optimizer = decorate_o2(model, optimizer)
    eval_loader, eval_metrics, eval_loss = build_eval_pieces(config)
    train_metric_cfg = get(config, "Metric.Train")
    trainer = Trainer(model, train_loader, sampler, loss_fn, optimizer, scheduler,
                      Checkpointer(save_dir(config)), epochs, eval_loader=eval_loader,
                      eval_metrics=eval_metrics, eval_loss=eval_loss,
                      train_metrics=build_metrics(train_metric_cfg, "Metric.Train") if train_metric_cfg else [],
                      save_interval=get(config, "Global.save_interval", 1),
                      eval_interval=get(config, "Global.eval_interval", 1),
                      eval_during_train=get(config, "Global.eval_during_train", True),
                      start_eval_epoch=get(config, "Global.start_eval_epoch", 0),
                      print_batch_step=get(config, "Global.print_batch_step", 10),
                      amp=amp, scaler=scaler, visualdl=_visualdl(config), update_freq=update_freq,
                      ema=build_ema(config, model), metric_key=primary_key(eval_metrics),
                      batch_transform=batch_transform, folder_lock=lock,
                      progressive=build_progressive(config, model, train_loader.dataset))
    if checkpoints:
        trainer.resume(str(checkpoints), strict=bool(get(config, "Global.strict_load", True)),
                       trust=trust_weights(config))
    return trainer
