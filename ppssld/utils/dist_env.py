"""The one rule for this process's rank and the job's world size: ``paddle.distributed.launch``'s environment.

Read without importing Paddle, so logging, mining and the cache can ask before any collective exists
(0 and 1 outside the launcher).
"""
import os
from typing import Tuple


def rank() -> int:
    """This process's trainer rank (``PADDLE_TRAINER_ID``; 0 outside the launcher)."""
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def world_size() -> int:
    """Number of trainer processes (``PADDLE_TRAINERS_NUM``; 1 outside the launcher)."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def dist_env() -> Tuple[int, int]:
    """``(rank, world size)``."""
    return rank(), world_size()
