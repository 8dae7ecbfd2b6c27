"""ppssld drops the log noise it causes (Paddle's thread lecture when ppssld chose the count, PaddleClas's
init_res deprecation) and nothing else."""
import io
import logging
import os
import subprocess
import sys

from tests.conftest import ROOT

from ppssld.utils.quiet import OMP_LECTURE, drop_stderr_lines, quiet_ppcls_deprecations


def _stderr_of(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    full.update(env, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=full)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def test_thread_lecture_dropped_only_when_ppssld_chose_the_count():
    if (os.cpu_count() or 1) > 1:
        chosen = _stderr_of("import ppssld, paddle, os; assert int(os.environ['OMP_NUM_THREADS']) > 1")
        assert "OMP_NUM_THREADS WISELY" not in chosen and "not 1" not in chosen, chosen
    user = _stderr_of("import ppssld, paddle", OMP_NUM_THREADS="2")
    assert "PLEASE USE OMP_NUM_THREADS WISELY." in user  # the user's own choice keeps Paddle's message


def test_line_filter_keeps_every_other_line(monkeypatch):
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stderr", sink)
    with drop_stderr_lines(OMP_LECTURE) as stream:
        print("WARNING: OMP_NUM_THREADS set to 2, not 1. The computation ...", file=sys.stderr)
        print("a real warning", file=sys.stderr)
        sys.stderr.write(OMP_LECTURE[1] + "\n" + "tail without newline")
    assert sys.stderr is sink and stream.dropped == 2
    assert sink.getvalue() == "a real warning\ntail without newline"


def test_ppcls_init_res_deprecation_dropped_other_warnings_kept(caplog):
    quiet_ppcls_deprecations()
    quiet_ppcls_deprecations()  # idempotent: one filter
    target = logging.getLogger("ppcls")
    assert sum(type(f).__name__ == "_DropMessages" for f in target.filters) == 1
    with caplog.at_level(logging.WARNING, logger="ppcls"):
        target.warning(DeprecationWarning('"init_res" will be deprecated, please use "init_net" instead.'))
        target.warning("stage_pattern is wrong")
    assert [r.getMessage() for r in caplog.records] == ["stage_pattern is wrong"]


def test_native_stderr_line_dropped_others_replayed(capfd):
    from ppssld.utils.quiet import PIR_OUT_TENSOR, drop_native_stderr_lines

    with drop_native_stderr_lines(PIR_OUT_TENSOR):
        os.write(2, b"W1125 eager_utils.cc:3584] Paddle static graph(PIR) not support input out tensor for now!!!!!\n")
        os.write(2, b"W1125 other.cc:1] a real native warning\n")
    err = capfd.readouterr().err
    assert "a real native warning" in err and "input out tensor" not in err


def test_export_prints_no_pir_line(tmp_path, capfd):
    from ppssld.arch.zoo import build_backbone
    from ppssld.export.inference import save_inference_model

    save_inference_model(build_backbone("MobileNetV3_small_x0_35", class_num=3), [3, 32, 32], str(tmp_path / "m"))
    assert (tmp_path / "m.json").is_file() or (tmp_path / "m.pdmodel").is_file()
    assert "input out tensor" not in capfd.readouterr().err


def test_paddles_ccache_warning_dropped_and_nothing_else():
    assert "No ccache found" in _stderr_of("import paddle")  # Paddle alone prints it ...
    assert "No ccache found" not in _stderr_of("import ppssld, paddle")  # ... ppssld drops it
    other = _stderr_of("import ppssld, paddle, warnings; warnings.warn('another warning', UserWarning)")
    assert "another warning" in other


def test_faiss_loader_lines_dropped():
    code = "import logging; logging.basicConfig(level=logging.INFO); {}import faiss"
    assert "Loading faiss" in _stderr_of(code.format(""))
    assert "faiss" not in _stderr_of(code.format("import ppssld; "))
