"""Global.device: missing means a visible GPU else the CPU; 'gpu' without CUDA is a clear ConfigError."""
import logging

import paddle
import pytest

from ppssld.engine import builder, distributed
from ppssld.utils.errors import ConfigError


def _fake(monkeypatch, cuda: bool, gpus: int) -> list:
    """Pretend Paddle has (or lacks) CUDA and ``gpus`` visible GPUs; record set_device calls."""
    calls = []
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: cuda)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(paddle, "set_device", lambda name: calls.append(name))
    monkeypatch.setattr(paddle.device, "get_device", lambda: calls[-1] if calls else "cpu")
    monkeypatch.setitem(distributed._INITIALISED, "logged", False)
    return calls


@pytest.mark.parametrize("cuda, gpus, expected", [(True, 2, "gpu"), (True, 0, "cpu"), (False, 0, "cpu")])
def test_missing_key_uses_a_visible_gpu_else_cpu(monkeypatch, cuda, gpus, expected):
    calls = _fake(monkeypatch, cuda, gpus)
    assert distributed.select_device(None) == expected
    builder.prepare_runtime({"Global": {"seed": 1}})
    assert calls == ["gpu:0" if expected == "gpu" else "cpu"]


def test_explicit_cpu_wins_over_a_gpu(monkeypatch):
    calls = _fake(monkeypatch, True, 1)
    builder.prepare_runtime({"Global": {"device": "cpu"}})
    assert calls == ["cpu"]


def test_gpu_on_cpu_only_build_names_key_and_package(monkeypatch):
    calls = _fake(monkeypatch, False, 0)
    with pytest.raises(ConfigError, match=r"Global\.device is 'gpu'.*CPU-only build: install paddlepaddle-gpu"):
        builder.prepare_runtime({"Global": {"device": "gpu"}})
    assert calls == []


def test_gpu_with_no_visible_gpu_and_unknown_device(monkeypatch):
    _fake(monkeypatch, True, 0)
    with pytest.raises(ConfigError, match="no GPU is visible"):
        distributed.select_device("gpu")
    with pytest.raises(ConfigError, match=r"Global\.device must be one of cpu, gpu.*'xpu'"):
        distributed.select_device("xpu")


def test_device_and_process_count_logged_once(monkeypatch, caplog):
    _fake(monkeypatch, True, 1)
    with caplog.at_level(logging.INFO, logger="ppssld.engine.distributed"):
        distributed.init(None)
        distributed.init(None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device:")]
    assert lines == ["device: gpu:0 (Global.device not set), 1 process(es)"]
