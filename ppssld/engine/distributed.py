"""Thin helpers over paddle.distributed: rank, world size, all-reduce of numpy arrays, peer loss.

When a rank dies (``kill -9``, out of memory) the others do not wait forever: gloo reports the
closed connection at the next collective (a peer that stops answering times out after gloo's
30 s; NCCL after ``PADDLE_PG_TIMEOUT``), :func:`peer_guard` turns that into a
:class:`PeerLostError` naming the rank and what it was doing, and ``paddle.distributed.launch``
stops the remaining processes of its node once one has failed.
"""
import logging
import os
from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np
import paddle
import paddle.distributed as dist

from ppssld.utils.dist_env import rank, world_size  # noqa: F401  (the one rank rule; engine code calls it here)
from ppssld.utils.errors import ConfigError, PpssldError

logger = logging.getLogger(__name__)

_INITIALISED = {"done": False, "logged": False}
# what a lost peer looks like in the collective backends' error text
_PEER_LOST_MARKERS = ("gloo", "nccl", "Connection reset", "Connection closed", "Broken pipe", "TIMEOUT")


class PeerLostError(PpssldError, RuntimeError):
    """Another rank died or stopped answering during a collective operation (the CLIs print it, exit 2)."""


def is_main() -> bool:
    """True on rank 0, the only rank that writes files."""
    return rank() == 0


DEVICES = ("cpu", "gpu")


def select_device(requested: Optional[str] = None) -> str:
    """The device ``Global.device`` means: the one place for this rule.

    Missing (None): ``gpu`` when Paddle is built with CUDA and a GPU is visible, else ``cpu`` (what a
    PaddleClas user on a GPU machine expects). ``gpu`` on a CPU-only Paddle build, or with no GPU
    visible, is an error rather than a silent fall-back to the CPU.

    Args:
        requested: ``Global.device`` as written (``cpu``, ``gpu`` or None).
    Returns:
        ``"cpu"`` or ``"gpu"``.
    Raises:
        ConfigError: an unknown device, or ``gpu`` that this Paddle build or machine cannot give.
    """
    if requested is None:
        cuda = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
        return "gpu" if cuda else "cpu"
    device = str(requested).lower()
    if device not in DEVICES:
        raise ConfigError(f"Global.device must be one of {', '.join(DEVICES)} (or left out to use a GPU when "
                          f"one is visible), got {requested!r}")
    if device == "gpu" and not paddle.device.is_compiled_with_cuda():
        raise ConfigError(f"Global.device is 'gpu' but the installed Paddle ({paddle.__version__}) is a CPU-only "
                          f"build: install paddlepaddle-gpu built for your CUDA version (see "
                          f"https://www.paddlepaddle.org.cn/install/quick), or set Global.device: cpu")
    if device == "gpu" and paddle.device.cuda.device_count() == 0:
        raise ConfigError("Global.device is 'gpu' but no GPU is visible to Paddle (check CUDA_VISIBLE_DEVICES and "
                          "the driver with nvidia-smi), or set Global.device: cpu")
    return device


def use_device(device: Optional[str] = None) -> str:
    """Set the device :func:`select_device` picks; log it and the process count once.

    Args:
        device: ``Global.device`` as written (None when the key is missing).
    Returns:
        ``"cpu"`` or ``"gpu"``.
    """
    chosen = select_device(device)
    if chosen == "gpu":
        paddle.set_device(f"gpu:{int(os.environ.get('FLAGS_selected_gpus', '0').split(',')[0])}")
    else:
        paddle.set_device("cpu")
    if not _INITIALISED["logged"]:
        _INITIALISED["logged"] = True
        logger.info("device: %s (Global.device %s), %d process(es)", paddle.device.get_device(),
                    "not set" if device is None else repr(device), world_size())
    return chosen


def init(device: Optional[str] = None) -> str:
    """Set the device (:func:`use_device`) and, with several processes, initialise the group.

    Args:
        device: ``Global.device`` as written (None when the key is missing).
    Returns:
        The device used, ``"cpu"`` or ``"gpu"``.
    """
    chosen = use_device(device)
    if world_size() > 1 and not _INITIALISED["done"]:
        dist.init_parallel_env()
        _INITIALISED["done"] = True
        logger.info("distributed: rank %d of %d", rank(), world_size())
    return chosen


def all_reduce_sum(array: np.ndarray) -> np.ndarray:
    """Sum a numpy array over all ranks (identity with one process)."""
    if world_size() == 1:
        return np.asarray(array)
    tensor = paddle.to_tensor(np.asarray(array, dtype=np.float64))
    dist.all_reduce(tensor)
    return tensor.numpy()


def gather_rows(values: paddle.Tensor) -> paddle.Tensor:
    """Every rank's ``values`` (a 1-D tensor of finite numbers, same length everywhere) as the rows of a
    ``[world_size, len]`` tensor, through one all-reduce that stays on the device (no host read).

    With one process: ``values[None]``. The training loop's non-finite flag travels this way, so all
    ranks take the same branch at the same step.
    """
    row = values.reshape([1, -1])
    if world_size() == 1:
        return row
    onehot = np.zeros([world_size(), 1], dtype=np.float64)
    onehot[rank()] = 1.0
    packed = paddle.to_tensor(onehot, dtype=row.dtype, place=row.place) * row
    dist.all_reduce(packed)
    return packed


@contextmanager
def peer_guard(what: str) -> Iterator[None]:
    """Re-raise a collective failure caused by a lost peer as :class:`PeerLostError`.

    Args:
        what: what this rank was doing (``training epoch 2, step 5/40``), for the message.
    """
    try:
        yield
    except RuntimeError as err:
        text = str(err)
        if world_size() == 1 or isinstance(err, PeerLostError) or not any(m in text for m in _PEER_LOST_MARKERS):
            raise
        detail = text.strip().splitlines()[-1][:300] if text.strip() else type(err).__name__
        raise PeerLostError(
            f"rank {rank()} of {world_size()} lost contact with another rank while {what}: a process died "
            f"or stopped answering ({detail}). Every rank stops; see the other ranks' logs (workerlog.N) "
            f"for the cause, then resume with -o Global.checkpoints=<output_dir>/<Arch.name>/latest") from err


def barrier() -> None:
    """Wait for every rank (no-op with one process)."""
    if world_size() > 1:
        dist.barrier()


def average_buffers(layer: paddle.nn.Layer, skip_prefixes: tuple = ()) -> int:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, in place.

    Each rank updates its running statistics from its own batches; averaging them at the end
    of an epoch leaves every rank, and the checkpoint, with the same (better-estimated) values.

    Args:
        layer: the model.
        skip_prefixes: buffer-name prefixes to leave alone (frozen models never change theirs).
    Returns:
        The number of buffers averaged (0 with one process).
    """
    if world_size() == 1:
        return 0
    count = 0
    # Paddle keeps BatchNorm running statistics as non-trainable parameters, others as buffers
    stats = [(n, p) for n, p in layer.named_parameters() if p.stop_gradient] + list(layer.named_buffers())
    for name, buf in stats:
        if name.startswith(skip_prefixes) or not paddle.is_floating_point(buf):
            continue
        reduced = buf.clone()
        dist.all_reduce(reduced)
        buf.set_value(reduced / world_size())
        count += 1
    return count
