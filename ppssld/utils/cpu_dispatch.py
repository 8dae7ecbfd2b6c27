"""Let Intel MKL use its AVX2 kernels on AMD CPUs (``MKL_DEBUG_CPU_TYPE=5``) unless the user chose otherwise.

Paddle's CPU wheel does its dense maths (convolutions and matrix products in dygraph training and evaluation)
in the MKL it bundles (``paddle/libs/libmklml_intel.so``). That MKL picks its kernels by CPU *vendor*: on an AMD
CPU it takes a generic SSE path whatever the CPU supports. Measured on this project's AMD EPYC (Zen 4, 2 cores,
2026-12-08; ``benchmark/mkl_dispatch.py``): a 1024x1024 float32 matrix product 5.6-7.1 -> 16-20
GFLOP/s, ResNet18's 32-px training step about 2x faster. ``MKL_DEBUG_CPU_TYPE=5`` makes this MKL version take
its AVX2 path; MKL reads it at its first call, so setting it at ``import ppssld`` is in time even after Paddle is
imported. oneDNN (Paddle Inference) detects the CPU by its features and needs nothing.

A value the user set (any value) is left alone; ``PPSSLD_MKL_DISPATCH=keep`` leaves MKL's own choice.
"""
import os
from typing import Optional

_CHOSEN: dict = {}
VARIABLE = "MKL_DEBUG_CPU_TYPE"
AVX2 = "5"


def cpu_vendor() -> Optional[str]:
    """``vendor_id`` of the first CPU in ``/proc/cpuinfo`` (``AuthenticAMD``, ``GenuineIntel``), or None."""
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def ensure_mkl_dispatch() -> Optional[str]:
    """Set ``MKL_DEBUG_CPU_TYPE=5`` on an AMD CPU when neither it nor ``PPSSLD_MKL_DISPATCH=keep`` is set.

    Returns:
        The value in force (None: unset).
    """
    if VARIABLE in os.environ:
        _CHOSEN.setdefault("source", "user")
        return os.environ[VARIABLE]
    if os.environ.get("PPSSLD_MKL_DISPATCH", "").lower() == "keep":
        _CHOSEN["source"] = "PPSSLD_MKL_DISPATCH=keep"
        return None
    vendor = cpu_vendor()
    if vendor != "AuthenticAMD":
        _CHOSEN["source"] = f"not set: {vendor or 'unknown'} CPU"
        return None
    os.environ[VARIABLE] = AVX2
    _CHOSEN["source"] = "ppssld: AMD CPU, MKL's AVX2 kernels"
    return AVX2


def dispatch_note() -> str:
    """One phrase for the start-up log line: the value and who chose it."""
    value = os.environ.get(VARIABLE)
    source = _CHOSEN.get("source", "unset")
    return f"{VARIABLE}={value} ({source})" if value is not None else f"{VARIABLE} {source}"
