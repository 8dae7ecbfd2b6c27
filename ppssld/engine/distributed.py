"""Thin helpers over paddle.distributed: rank, world size, all-reduce of numpy arrays."""
import logging
import os

import numpy as np
import paddle
import paddle.distributed as dist

logger = logging.getLogger(__name__)

_INITIALISED = {"done": False}


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
