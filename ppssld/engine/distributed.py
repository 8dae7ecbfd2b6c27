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
from typing import Iterator, List

import numpy as np
import paddle
import paddle.distributed as dist

logger = logging.getLogger(__name__)

_INITIALISED = {"done": False}
# what a lost peer looks like in the collective backends' error text
_PEER_LOST_MARKERS = ("gloo", "nccl", "Connection reset", "Connection closed", "Broken pipe", "TIMEOUT")


class PeerLostError(RuntimeError):
    """Another rank died or stopped answering during a collective operation."""


def world_size() -> int:
    """Number of trainer processes (1 without paddle.distributed.launch)."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def rank() -> int:
    """This process's rank."""
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def is_main() -> bool:
    """True on rank 0, the only rank that writes files."""
    return rank() == 0


def init(device: str = "cpu") -> None:
    """Select the device and, when launched with several processes, initialise the group.

    Args:
        device: ``cpu`` or ``gpu`` (``Global.device``).
    """
    if device == "gpu" and not paddle.device.is_compiled_with_cuda():
        logger.warning("Global.device is 'gpu' but this Paddle build has no CUDA: running on CPU "
                       "(install paddlepaddle-gpu to use the GPU)")
        device = "cpu"
    if device == "gpu":
        paddle.set_device(f"gpu:{int(os.environ.get('FLAGS_selected_gpus', '0').split(',')[0])}")
    else:
        paddle.set_device("cpu")
    if world_size() > 1 and not _INITIALISED["done"]:
        dist.init_parallel_env()
        _INITIALISED["done"] = True
        logger.info("distributed: rank %d of %d", rank(), world_size())


def all_reduce_sum(array: np.ndarray) -> np.ndarray:
    """Sum a numpy array over all ranks (identity with one process)."""
    if world_size() == 1:
        return np.asarray(array)
    tensor = paddle.to_tensor(np.asarray(array, dtype=np.float64))
    dist.all_reduce(tensor)
    return tensor.numpy()


def gather_scalars(value: float) -> List[float]:
    """Every rank's ``value``, in rank order, through one all-reduce of a world-size vector.

    With one process: ``[value]``. A NaN or an infinity stays in its rank's slot (the others add 0).
    """
    if world_size() == 1:
        return [float(value)]
    packed = np.zeros(world_size(), dtype=np.float64)
    packed[rank()] = value
    return [float(v) for v in all_reduce_sum(packed)]


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
