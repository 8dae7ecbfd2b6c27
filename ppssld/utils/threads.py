"""Choose the CPU thread count for Paddle before it is imported."""
import os

_CHOSEN: dict = {}


def local_world_size() -> int:
    """Number of trainer processes on this node, from the launcher's environment.

    Returns:
        The local process count (1 when not launched by paddle.distributed.launch).
    """
    for key in ("PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM"):
        value = os.environ.get(key)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def ensure_cpu_threads() -> int:
    """Set ``OMP_NUM_THREADS`` to cores / local processes when the user has not set it.

    Paddle pins itself to a single thread when the variable is unset; on a 2-core CPU
    two threads train about 40% faster. Must run before ``import paddle``.

    Returns:
        The thread count in force.
    """
    user_value = os.environ.get("OMP_NUM_THREADS")
    if user_value:
        _CHOSEN.setdefault("source", "user")
        return int(user_value) if user_value.isdigit() else 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // local_world_size())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _CHOSEN["source"] = "ppssld"
    if threads > 1:  # Paddle lectures about any count above 1; ppssld chose it on purpose
        from ppssld.utils.quiet import import_paddle_without_thread_lecture

        import_paddle_without_thread_lecture()
    return threads


def thread_source() -> str:
    """Who chose the thread count: ``"user"`` or ``"ppssld"``."""
    return _CHOSEN.get("source", "unset")
