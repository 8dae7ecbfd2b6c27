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


def launcher_set_threads() -> bool:
    """Whether ``OMP_NUM_THREADS`` came from ``paddle.distributed.launch``, not from the user.

    The launcher imports Paddle, whose import sets ``OMP_NUM_THREADS=1`` when it is unset, and its
    workers inherit that. The launcher's environment as it was started (``/proc/<parent>/environ``,
    which later changes do not touch) tells whether the user had set it. False where that cannot be read.
    """
    if local_world_size() == 1 and "PADDLE_TRAINER_ID" not in os.environ:
        return False
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
            names = {item.split(b"=", 1)[0] for item in handle.read().split(b"\0") if item}
    except OSError:
        return False
    return b"OMP_NUM_THREADS" not in names and b"PADDLE_LOCAL_SIZE" not in names


def ensure_cpu_threads() -> int:
    """Set ``OMP_NUM_THREADS`` to cores / local processes when the user has not set it.

    Paddle pins itself to a single thread when the variable is unset; on a 2-core CPU
    two threads train about 40% faster. Must run before ``import paddle``.

    Returns:
        The thread count in force.
    """
    user_value = os.environ.get("OMP_NUM_THREADS")
    if user_value and launcher_set_threads():
        _CHOSEN["launcher"] = user_value
        user_value = None
    if user_value:
        _CHOSEN.setdefault("source", "user")
        return int(user_value) if user_value.isdigit() else 1
    cores = _cores()
    threads = max(1, cores // local_world_size())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _CHOSEN["source"] = "ppssld"
    if threads > 1:  # Paddle lectures about any count above 1; ppssld chose it on purpose
        from ppssld.utils.quiet import import_paddle_without_thread_lecture

        import_paddle_without_thread_lecture()
    return threads


def thread_source() -> str:
    """Who chose the thread count, in words for the log (``user``, ``ppssld: ...``)."""
    source = _CHOSEN.get("source", "unset")
    if source != "ppssld":
        return source
    why = f"ppssld: {_cores()} cores / {local_world_size()} local process(es)"
    if "launcher" in _CHOSEN:
        why += f"; paddle.distributed.launch had set {_CHOSEN['launcher']}, not you"
    return why


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
