"""ppssld: SSLD distillation for PaddleClas backbones.

Importing the package sets a sensible CPU thread count (see
:func:`ppssld.utils.threads.ensure_cpu_threads`) before Paddle is imported, unless
the user already chose one with ``OMP_NUM_THREADS``, and drops Paddle's import-time ccache warning.
"""
from ppssld.utils.quiet import quiet_paddle_import_warnings
from ppssld.utils.threads import ensure_cpu_threads

__version__ = "0.1.0"

quiet_paddle_import_warnings()
ensure_cpu_threads()
