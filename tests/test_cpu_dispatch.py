"""MKL_DEBUG_CPU_TYPE on AMD CPUs: set by ``import ppssld`` unless the user chose, and the maths agrees."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ppssld.utils import cpu_dispatch
from tests.conftest import ROOT

PROBE = ("import os, ppssld, numpy as np, paddle\n"
         "from ppssld.utils.cpu_dispatch import dispatch_note\n"
         "a = paddle.to_tensor(np.random.default_rng(0).standard_normal((257, 300)).astype('float32'))\n"
         "np.save(os.environ['OUT'], (a @ a.T).numpy())\n"
         "print(os.environ.get('MKL_DEBUG_CPU_TYPE'), '|', dispatch_note())\n")


def _probe(tmp_path, tag, **env):
    run_env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "PPSSLD_MKL_DISPATCH")}
    run_env.update(env, OUT=str(tmp_path / f"{tag}.npy"), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=run_env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip().splitlines()[-1]
    value, note = [s.strip() for s in out.split("|")]
    return value, note, np.load(tmp_path / f"{tag}.npy")


@pytest.mark.parametrize("vendor, expected", [("AuthenticAMD", "5"), ("GenuineIntel", None), (None, None)])
def test_set_only_on_amd_and_never_over_the_users_value(monkeypatch, vendor, expected):
    monkeypatch.delenv("MKL_DEBUG_CPU_TYPE", raising=False)
    monkeypatch.delenv("PPSSLD_MKL_DISPATCH", raising=False)
    monkeypatch.setattr(cpu_dispatch, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(cpu_dispatch, "_CHOSEN", {})
    assert cpu_dispatch.ensure_mkl_dispatch() == expected
    assert os.environ.get("MKL_DEBUG_CPU_TYPE") == expected
    monkeypatch.setenv("MKL_DEBUG_CPU_TYPE", "3")  # the user's value stays, whatever the CPU
    monkeypatch.setattr(cpu_dispatch, "_CHOSEN", {})
    assert cpu_dispatch.ensure_mkl_dispatch() == "3" and "user" in cpu_dispatch.dispatch_note()
    monkeypatch.delenv("MKL_DEBUG_CPU_TYPE")
    monkeypatch.setenv("PPSSLD_MKL_DISPATCH", "keep")
    assert cpu_dispatch.ensure_mkl_dispatch() is None and "MKL_DEBUG_CPU_TYPE" not in os.environ


def test_import_ppssld_sets_it_here_and_the_products_agree(tmp_path):
    """On this machine's CPU: the variable follows the vendor; the product with MKL's AVX2 kernels equals the one
    with its own choice within float32 rounding (same maths, other kernels)."""
    amd = cpu_dispatch.cpu_vendor() == "AuthenticAMD"
    value, note, ours = _probe(tmp_path, "default")
    assert value == ("5" if amd else "None"), note
    kept_value, kept_note, kept = _probe(tmp_path, "keep", PPSSLD_MKL_DISPATCH="keep")
    assert kept_value == "None" and "keep" in kept_note
    a = np.random.default_rng(0).standard_normal((257, 300)).astype(np.float32).astype(np.float64)
    reference = a @ a.T  # float64: both float32 products are within rounding of it
    assert ours.shape == kept.shape == (257, 257)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(kept, reference, rtol=1e-4, atol=2e-4)
