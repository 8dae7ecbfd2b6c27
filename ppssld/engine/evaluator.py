"""Evaluation: student top-k over the whole eval set, exactly once across ranks."""
import contextlib
import logging
import time
from typing import Any, Dict, List, Optional

import numpy as np
import paddle

from ppssld.engine import distributed
from ppssld.engine.meters import DeviceMeters, format_metrics
from ppssld.utils import device_checks
from ppssld.utils.device_checks import DeferredChecks

logger = logging.getLogger(__name__)


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, loader: Any, metrics: List[Any], loss_fn: Optional[Any] = None,
             epoch: Optional[int] = None, print_batch_step: int = 0,
             amp: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """Evaluate ``model`` and log PaddleClas's ``[Eval][Epoch N][Avg]`` line.

    The eval sampler gives every sample to exactly one rank, so loss sums, metric counts and
    sample counts are summed over ranks: the result equals a single-process evaluation.
    A DistillationModel runs only its ``infer_model`` (the student): the frozen teacher's
    outputs are not needed to score the student, and skipping them saves its forward pass.

    Args:
        model: a plain backbone or a DistillationModel (its outputs dict is passed to metrics).
        loader: the eval DataLoader.
        metrics: metric objects (``reset``, ``update``, ``counts``, ``set_counts``, ``summary``).
        loss_fn: optional ``Loss.Eval`` combined loss.
        epoch: epoch number for the log line.
        print_batch_step: log every this many batches (0: never).
        amp: the training's AMP options (``level``, ``black_list``): evaluate under the same
            autocast level, as PaddleClas does (an O2 model holds float16 parameters).
    Returns:
        Averages: each loss part and each metric (``top1``, ``top5``, ...).
    """
    was_training = model.training
    model.eval()
    for metric in metrics:
        metric.reset()
    meters, checks = DeviceMeters(), DeferredChecks()
    seen, tic = 0, time.time()
    total = len(loader)
    infer_name = getattr(model, "infer_model_name", None)
    with device_checks.deferred(checks):  # nothing is read from the device until the loop ends
        for step, (images, labels) in enumerate(loader):
            with _autocast(amp):
                outputs = {infer_name: model.infer_model(images)} if infer_name else model(images)
            if loss_fn is not None:
                meters.update(loss_fn(outputs, labels), int(labels.shape[0]))
            for metric in metrics:
                accumulate = getattr(metric, "accumulate", None)  # on the device: no host read per step
                (accumulate or metric.update)(outputs, labels)
            seen += int(labels.shape[0])
            if print_batch_step and (step + 1) % print_batch_step == 0:
                logger.info("[Eval][Epoch %s][Iter: %d/%d] %.1f images/s", epoch, step + 1, total,
                            seen / max(time.time() - tic, 1e-9))
    parts = meters.window() + [flag.reshape([-1]) for flag in checks.tensors()]
    values = paddle.concat(parts).numpy().tolist() if parts else []  # the one host read of the loop
    error = checks.settle(meters.read_from(values), f"evaluating epoch {epoch}")
    if error is not None:
        raise error
    keys = sorted(meters.sums)
    packed = np.array([seen] + [meters.sums[k] for k in keys], dtype=np.float64)
    packed = distributed.all_reduce_sum(packed)
    results: Dict[str, float] = {k: float(v) / max(packed[0], 1) for k, v in zip(keys, packed[1:])}
    for metric in metrics:
        metric.set_counts(distributed.all_reduce_sum(metric.counts()))
        results.update(metric.summary())
    results["samples"] = int(packed[0])
    logger.info("[Eval][Epoch %s][Avg]%s", epoch if epoch is not None else 0,
                format_metrics({k: v for k, v in results.items() if k != "samples"}))
    if was_training:
        model.train()
    return results


def _autocast(amp: Optional[Dict[str, Any]]) -> Any:
    if not amp:
        return contextlib.nullcontext()
    return paddle.amp.auto_cast(level=amp["level"], custom_black_list=amp.get("black_list"))

