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
