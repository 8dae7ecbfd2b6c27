"""ppssld: SSLD distillation for PaddleClas backbones.

Importing the package sets a sensible CPU thread count (see
:func:`ppssld.utils.threads.ensure_cpu_threads`) before Paddle is imported, unless
the user already chose one with ``OMP_NUM_THREADS``, lets MKL use its AVX2 kernels on AMD CPUs
(:mod:`ppssld.utils.cpu_dispatch`), and drops Paddle's ccache warning and faiss's loader lines at import.
"""
from ppssld.utils.cpu_dispatch import ensure_mkl_dispatch
from ppssld.utils.quiet import quiet_import_noise
from ppssld.utils.threads import ensure_cpu_threads

__version__ = "0.1.0"

quiet_import_noise()
ensure_mkl_dispatch()
ensure_cpu_threads()
