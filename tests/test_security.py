"""Weights from strangers are data: payload pickles are refused before they run; genuine files load
exactly as ``paddle.load`` reads them; ``.safetensors`` in and out."""
import base64
import glob
import json
import os
import pickle
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import numpy as np
import paddle
import pytest
import yaml

from ppssld.arch.build import build_model
from ppssld.arch.weights import load_weights
from ppssld.arch.zoo import build_backbone
from ppssld.utils.config import load_config, trust_weights
from ppssld.engine.builder import build_full_model, build_trainer
from ppssld.engine.checkpoint import Checkpointer
from ppssld.export.student import build_export_model
from ppssld.teacher.frozen import teacher_from_config, teacher_from_inference, teacher_from_weights
from ppssld.utils.errors import ConfigError, WeightsError
from ppssld.utils.safe_load import check_inference_side_files, safe_load
from ppssld.utils.safetensors_io import convert_weights, save_safetensors
from tests.conftest import ROOT, distill_config, save_random_backbone

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "paddleclas")


class _Payload:
    """Pickles to ``os.system('touch MARKER')``: what a malicious .pdparams holds."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_payload(path: str, marker: str, wrap: bool = True) -> str:
    """A .pdparams whose pickle runs a command; ``wrap`` hides it among genuine-looking arrays."""
    obj: Any = _Payload(marker)
    if wrap:
        obj = {"conv1.weight": np.zeros((2, 2), np.float32), "fc.bias": obj, "fc.weight": np.ones(3, np.float32)}
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=4)
    return path


@pytest.fixture
def payload(tmp_path):
    marker = str(tmp_path / "PWNED")
    return write_payload(str(tmp_path / "evil.pdparams"), marker), marker


def assert_refused(exc_info, path: str, marker: str) -> None:
    text = str(exc_info.value)
    assert path in text and "posix.system" in text and "Global.trust_weights" in text, text
    assert not os.path.exists(marker)


def assert_same(a: Any, b: Any, at: str = "$") -> None:
    """Deep equality of two loaded objects: types, keys in order, dtypes, values, tensor names."""
    assert type(a) is type(b), (at, type(a), type(b))
    if isinstance(a, paddle.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), at
        assert a.name == b.name or a.name.startswith("generated_tensor"), (at, a.name, b.name)
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=at)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, at
        np.testing.assert_array_equal(a, b, err_msg=at)
    elif isinstance(a, dict):
        assert list(a) == list(b), at
        for key in a:
            assert_same(a[key], b[key], f"{at}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), at
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{at}[{i}]")
    else:
        assert a == b, (at, a, b)


def assert_loads_like_paddle(path: str) -> None:
    for return_numpy in (False, True):
        assert_same(safe_load(path, return_numpy=return_numpy), paddle.load(path, return_numpy=return_numpy))


# ---------------------------------------------------------------- payloads are refused

def test_payload_is_refused_before_it_runs(payload):
    path, marker = payload
    with pytest.raises(WeightsError) as info:
        safe_load(path)
    assert_refused(info, path, marker)
    bare = write_payload(path + ".bare", marker, wrap=False)
    with pytest.raises(WeightsError) as info:
        safe_load(bare)
    assert_refused(info, bare, marker)


def test_trust_opt_in_falls_back_to_paddle_load(payload):
    path, marker = payload  # proves the opt-in really is paddle.load (and that the payload is live)
    safe_load(path, trust=True)
    assert os.path.exists(marker)


@pytest.mark.parametrize("source", ["builtins.exec", "subprocess.Popen", "builtins.getattr", "paddle.load"])
def test_other_globals_are_refused(tmp_path, source):
    module, name = source.rsplit(".", 1)
    path = str(tmp_path / "x.pdparams")
    with open(path, "wb") as handle:  # protocol 0 GLOBAL + REDUCE, written by hand
        handle.write(f"c{module}\n{name}\n(S'x'\ntR.".encode())
    with pytest.raises(WeightsError, match=f"asks to import {source}"):
        safe_load(path)


def test_eval_is_only_paddles_dense_tensor_form(tmp_path):
    marker = str(tmp_path / "PWNED")
    path = str(tmp_path / "x.pdparams")
    with open(path, "wb") as handle:
        handle.write(f"cbuiltins\neval\n(S'__import__(\"os\").system(\"touch {marker}\")'\n(dtR.".encode())
    with pytest.raises(WeightsError, match="not Paddle's"):
        safe_load(path)
    assert not os.path.exists(marker)
    tensor = paddle.to_tensor(np.arange(6, dtype="float32").reshape(2, 3))
    dense = tensor.value().get_tensor()  # keep ``tensor`` alive: ``dense`` borrows its memory
    paddle.save(dense, str(tmp_path / "dense.pd"))  # pickled by Paddle as eval('data', {'data': array})
    assert_loads_like_paddle(str(tmp_path / "dense.pd"))


def test_payload_as_teacher_pretrained_and_global_pretrained_model(payload, tiny_data, tmp_path):
    path, marker = payload
    root, paths = tiny_data
    cfg = distill_config(root, paths, path, str(tmp_path / "out"))
    with pytest.raises(WeightsError) as info:
        build_model(cfg["Arch"])
    assert_refused(info, path, marker)
    with pytest.raises(WeightsError) as info:
        teacher_from_config(cfg)
    assert_refused(info, path, marker)
    with pytest.raises(WeightsError) as info:
        teacher_from_weights("ResNet18", path, 4)
    assert_refused(info, path, marker)
    cfg["Arch"]["models"][0]["Teacher"]["pretrained"] = save_random_backbone(str(tmp_path / "t.pdparams"))
    cfg["Global"]["pretrained_model"] = path
    with pytest.raises(WeightsError) as info:
        build_full_model(cfg)
    assert_refused(info, path, marker)
    with pytest.raises(WeightsError) as info:
        build_export_model(cfg)
    assert_refused(info, path, marker)


def test_payload_in_a_legacy_inference_models_info_file(tmp_path):
    prefix = str(tmp_path / "inference")
    marker = str(tmp_path / "PWNED")
    genuine = {"conv2d_0.w_0": {"structured_name": "0.weight", "stop_gradient": False, "trainable": True}}
    with open(prefix + ".pdiparams.info", "wb") as handle:  # what a legacy paddle.jit.save writes
        pickle.dump(genuine, handle, protocol=2)
    assert check_inference_side_files(prefix) == [prefix + ".pdiparams.info"]
    write_payload(prefix + ".pdiparams.info", marker, wrap=False)  # paddle.jit.load would unpickle this
    with pytest.raises(WeightsError) as info:
        teacher_from_inference(prefix)
    assert_refused(info, prefix + ".pdiparams.info", marker)


@pytest.mark.parametrize("ext", [".pdparams", ".pdopt", ".pdstates", "rng"])
def test_payload_in_any_checkpoint_file(tmp_path, ext):
    model = build_backbone("MobileNetV3_small_x0_35", class_num=4)
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    prefix = Checkpointer(str(tmp_path)).save("latest", model, opt, {"epoch": 1})
    marker = str(tmp_path / "PWNED")
    if ext == "rng":  # the RNG blob inside a genuine .pdstates is a pickle too
        states = paddle.load(prefix + ".pdstates", return_numpy=True)
        blob = pickle.dumps(_Payload(marker))
        states["rng"] = np.frombuffer(blob, np.uint8).copy()
        paddle.save(states, prefix + ".pdstates")
    else:
        write_payload(prefix + ext, marker)
    with pytest.raises(WeightsError, match="refused to load") as info:
        Checkpointer.load(prefix, model, opt)
    assert "posix.system" in str(info.value) and not os.path.exists(marker)


def test_payload_via_cli_exits_2_with_one_line_without_running(payload, tiny_data, tmp_path):
    path, marker = payload
    root, paths = tiny_data
    cfg = distill_config(root, paths, save_random_backbone(str(tmp_path / "t.pdparams")), str(tmp_path / "o"))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py"), "-c", str(cfg_path),
                           "-o", f"Global.pretrained_model={path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not os.path.exists(marker), proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "refused to load" in last and "--trust-weights" in last
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"), path,
                           str(tmp_path / "x.safetensors")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not os.path.exists(marker), proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "posix.system" in last and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "x.safetensors")


def test_trust_weights_is_a_validated_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"Global": {"trust_weights": True}, "Arch": {"name": "ResNet18"}}))
    assert trust_weights(load_config(str(cfg))) is True
    assert trust_weights(load_config(str(cfg), ["Global.trust_weights=False"])) is False
    with pytest.raises(ConfigError, match="Global.trust_weights must be true or false"):
        trust_weights(load_config(str(cfg), ["Global.trust_weights=yes please"]))


# ---------------------------------------------------------------- genuine files load as paddle.load reads them

def test_ppssld_trainer_checkpoints_load_identically(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "teacher.pdparams"), class_num=4)
    build_trainer(distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=1)).fit()
    files = sorted(glob.glob(str(tmp_path / "out" / "DistillationModel" / "latest.*")))
    assert [os.path.splitext(f)[1] for f in files] == [".pdopt", ".pdparams", ".pdstates"]
    for path in files + [teacher]:
        assert_loads_like_paddle(path)
    cfg = distill_config(root, paths, teacher, str(tmp_path / "out"), epochs=2)
    cfg["Global"]["checkpoints"] = str(tmp_path / "out" / "DistillationModel" / "latest")
    assert build_trainer(cfg).start_epoch == 2  # resume (safe by default) restores optimizer, RNG, counters


@pytest.mark.parametrize("protocol", [2, 4])
def test_paddleclas_published_pretrained_layout(tmp_path, protocol):
    layer = build_backbone("MobileNetV3_small_x0_35", class_num=4)
    arrays = {k: v.numpy() for k, v in layer.state_dict().items()}
    bare = str(tmp_path / f"MobileNetV3_small_x0_35_pretrained_p{protocol}.pdparams")
    with open(bare, "wb") as handle:  # early releases: a pickled dict of numpy arrays
        pickle.dump(arrays, handle, protocol=protocol)
    saved = str(tmp_path / "saved.pdparams")
    paddle.save(layer.state_dict(), saved, protocol=protocol)  # later releases: paddle.save of the state dict
    for path in (bare, saved):
        assert_loads_like_paddle(path)
        fresh = build_backbone("MobileNetV3_small_x0_35", class_num=4)
        assert load_weights(fresh, path, strict=True) == []
        for key, value in fresh.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), arrays[key])


@pytest.mark.parametrize("name", ["Momentum", "AdamW"])
def test_optimizer_states_with_lr_scheduler(tmp_path, name):
    model = build_backbone("MobileNetV3_small_x0_35", class_num=4)
    sched = paddle.optimizer.lr.LinearWarmup(paddle.optimizer.lr.CosineAnnealingDecay(0.1, 10), 2, 0.0, 0.1)
    kind = getattr(paddle.optimizer, name)
    opt = kind(sched, parameters=model.parameters(), weight_decay=1e-4) if name == "Momentum" else \
        kind(sched, parameters=model.parameters(), weight_decay=0.05)
    model(paddle.randn([2, 3, 32, 32])).mean().backward()
    opt.step()
    sched.step()
    path = str(tmp_path / f"{name}.pdopt")
    paddle.save([opt.state_dict()], path)  # PaddleClas's .pdopt: a list of optimizer states
    assert_loads_like_paddle(path)
    assert "LR_Scheduler" in safe_load(path)[0]
    paddle.save(opt.state_dict(), path)
    assert_loads_like_paddle(path)
    opt.set_state_dict(safe_load(path))


def test_nested_objects_and_scalars(tmp_path):
    path = str(tmp_path / "x.pdstates")
    paddle.save({"metric": 0.5, "epoch": 3, "np": np.float32(1.5), "i": np.int64(2), "t": (1, "a"), "c": 1 + 2j,
                 "nested": {"a": [paddle.randn([2]), 1], "b": None}, "set": {1, 2}}, path)
    assert_loads_like_paddle(path)
    paddle.save(paddle.randn([3]), str(tmp_path / "t.pd"))
    assert_loads_like_paddle(str(tmp_path / "t.pd"))


def test_split_form_of_huge_arrays_is_rejoined(tmp_path):
    # Paddle writes this form for protocol 2/3 saves of arrays over 1 GiB (io_utils._unpack_saved_dict);
    # the same layout at a small size exercises the re-joining without writing gigabytes.
    big = np.arange(24, dtype="float32").reshape(2, 3, 4)
    flat = big.reshape(-1)
    obj = {"w@@.0": flat[:10], "w@@.1": flat[10:20], "w@@.2": flat[20:], "b": np.ones(2, np.float32),
           "UnpackBigParamInfor@@": {"w": {"OriginShape": big.shape, "slices": ["w@@.0", "w@@.1", "w@@.2"]}},
           "StructuredToParameterName@@": {"w": "linear_0.w_0", "b": "linear_0.b_0"}}
    path = str(tmp_path / "split.pdparams")
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)
    assert_loads_like_paddle(path)
    loaded = safe_load(path)
    assert list(loaded) == ["b", "w"] and loaded["w"].name == "linear_0.w_0"
    np.testing.assert_array_equal(loaded["w"].numpy(), big)


def _fixture_files():
    """The pickled checkpoint files under the fixtures (not the exported models' raw .pdiparams)."""
    return sorted(p for p in glob.glob(os.path.join(FIXTURES, "**", "*.pd*"), recursive=True)
                  if p.endswith((".pdparams", ".pdopt", ".pdstates", ".pdema")))


def test_paddleclas_engine_checkpoints(tmp_path):
    """PaddleClas's own ``save_model`` and EMA (what its engine calls) with AdamW and a warm-up cosine
    schedule, as its optimizer builder makes them; plus the checkpoints PaddleClas's engine wrote under
    tests/fixtures/paddleclas/ (when that folder is present)."""
    from paddleclas.ppcls.utils.ema import ExponentialMovingAverage
    from paddleclas.ppcls.utils.save_load import save_model

    model = build_backbone("MobileNetV3_small_x0_35", class_num=4)
    sched = paddle.optimizer.lr.LinearWarmup(paddle.optimizer.lr.CosineAnnealingDecay(0.01, 6), 3, 0.0, 0.01)
    opt = paddle.optimizer.AdamW(sched, beta1=0.9, beta2=0.999, epsilon=1e-8, parameters=model.parameters(),
                                 weight_decay=0.05)
    ema = ExponentialMovingAverage(model, 0.9)
    model(paddle.randn([2, 3, 32, 32])).mean().backward()
    opt.step()
    sched.step()
    ema.update(model)
    save_model(model, [opt], {"metric": 0.25, "epoch": 1}, str(tmp_path), ema=ema.module, prefix="epoch_1")
    files = sorted(glob.glob(str(tmp_path / "epoch_1.*"))) + _fixture_files()
    assert [os.path.basename(f) for f in files[:4]] == [f"epoch_1.{e}" for e in ("pdema", "pdopt", "pdparams",
                                                                                   "pdstates")]
    for path in files:
        assert_loads_like_paddle(path)


# ---------------------------------------------------------------- safetensors in and out

def test_safetensors_round_trip_and_strict_keys(tmp_path):
    layer = build_backbone("MobileNetV3_small_x0_35", class_num=4)
    src = str(tmp_path / "w.pdparams")
    paddle.save(layer.state_dict(), src)
    st = str(tmp_path / "w.safetensors")
    convert_weights(src, st)
    back = str(tmp_path / "back.pdparams")
    convert_weights(st, back)
    ref = paddle.load(src, return_numpy=True)
    for path in (st, back):
        got = safe_load(path, return_numpy=True)
        assert sorted(got) == sorted(ref)
        for key in ref:
            assert got[key].dtype == ref[key].dtype
            np.testing.assert_array_equal(got[key], ref[key])
    fresh = build_backbone("MobileNetV3_small_x0_35", class_num=4)
    assert load_weights(fresh, str(tmp_path / "w"), strict=True) == []  # suffix optional (.pdparams first)
    assert load_weights(fresh, st, strict=True) == []
    partial = {k: v for k, v in ref.items() if k != "fc.bias"}
    save_safetensors({**partial, "extra.w": np.zeros(2, np.float32)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match=r"1 missing, 1 unexpected.*missing fc\.bias; unexpected extra\.w"):
        load_weights(fresh, str(tmp_path / "bad.safetensors"), strict=True)
    with pytest.raises(WeightsError, match="not a readable .safetensors"):
        (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04junk")
        safe_load(str(tmp_path / "junk.safetensors"))


def test_safetensors_as_teacher_pretrained_and_global_pretrained_model(tiny_data, tmp_path):
    root, paths = tiny_data
    teacher = save_random_backbone(str(tmp_path / "t.pdparams"))
    st = str(tmp_path / "t.safetensors")
    convert_weights(teacher, st)
    cfg = distill_config(root, paths, st, str(tmp_path / "o"))
    model = build_full_model(cfg)
    ref = paddle.load(teacher, return_numpy=True)
    got = {k[len("Teacher."):]: v.numpy() for k, v in model.state_dict().items() if k.startswith("Teacher.")}
    assert sorted(got) == sorted(ref) and all(np.array_equal(got[k], ref[k]) for k in ref)
    ckpt = str(tmp_path / "full.safetensors")
    save_safetensors(model.state_dict(), ckpt)
    cfg["Global"]["pretrained_model"] = ckpt[: -len(".safetensors")]  # suffix optional here too
    again = build_full_model(cfg)
    for key, value in again.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[key].numpy())


def test_export_writes_a_safetensors_twin_that_gives_identical_outputs(tmp_path):
    from ppssld.export.inference import export_model
    from tests.test_export import CLASSES, STUDENT, make_project

    proj = make_project(str(tmp_path))
    result = export_model(proj["config"], weights=proj["ckpt"], with_hub=False)
    twin = result.pretrained[: -len(".pdparams")] + ".safetensors"
    assert os.path.basename(twin) == f"{STUDENT}_ssld_pretrained.safetensors"
    assert sorted(safe_load(twin)) == sorted(paddle.load(result.pretrained))
    a, b = build_backbone(STUDENT, class_num=len(CLASSES)), build_backbone(STUDENT, class_num=len(CLASSES))
    assert load_weights(a, result.pretrained, strict=True) == [] and load_weights(b, twin, strict=True) == []
    a.eval(), b.eval()
    x = paddle.randn([2, 3, 32, 32])
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    assert not [f for f in os.listdir(os.path.dirname(twin)) if f.endswith(".tmp")]
    teacher = teacher_from_inference(os.path.join(result.model_dir, "inference"))  # a genuine (PIR) model
    probs, _ = teacher(x.numpy())
    np.testing.assert_allclose(probs, paddle.nn.functional.softmax(a(x)).numpy(), rtol=1e-4, atol=1e-5)


LEGACY_DRIVER = """
import sys, numpy as np, paddle
from ppssld.teacher.frozen import teacher_from_inference
layer = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.Flatten(), paddle.nn.Linear(144, 5))
layer.eval()
paddle.jit.save(layer, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32")])
x = np.random.RandomState(0).rand(2, 3, 8, 8).astype("float32")
probs, _ = teacher_from_inference(sys.argv[1])(x)
ref = paddle.nn.functional.softmax(layer(paddle.to_tensor(x))).numpy()
print("max diff", float(np.abs(probs - ref).max()))
"""


def test_genuine_legacy_inference_model_passes_the_check(tmp_path):
    env = dict(os.environ, FLAGS_enable_pir_api="0", PYTHONPATH=ROOT, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    prefix = str(tmp_path / "legacy" / "inference")
    proc = subprocess.run([sys.executable, "-c", LEGACY_DRIVER, prefix], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(prefix + ".pdiparams.info") and os.path.isfile(prefix + ".pdmodel")
    assert float(proc.stdout.split("max diff")[-1]) < 1e-5


# ---------------------------------------------------------------- PaddleHub serving on localhost only

def _listeners(port: int) -> list:
    """Local addresses (hex, as in /proc/net/tcp) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            with open(table, encoding="ascii") as handle:
                rows = [line.split() for line in handle.readlines()[1:]]
            found += [r[1].split(":")[0] for r in rows if int(r[1].split(":")[1], 16) == port and r[3] == "0A"]
    return found


@pytest.mark.timeout(180)
def test_hub_serving_local_binds_loopback_only(tmp_path):
    from ppssld.export.inference import export_model
    from tests.test_export import make_project

    proj = make_project(str(tmp_path / "p"), images=2)
    result = export_model(proj["config"], weights=proj["ckpt"], hub_name="local_ssld")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "hub_home"
    home.mkdir()
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", HUB_HOME=str(home), OMP_NUM_THREADS="1")
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "deploy", "python", "hub_serving_local.py"),
                               "--module_dir", result.hub_dir, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 150
        while not _listeners(port):
            assert server.poll() is None and time.time() < deadline, server.stderr.read().decode()[-3000:]
            time.sleep(0.5)
        assert _listeners(port) == ["0100007F"]  # 127.0.0.1, not 00000000 (0.0.0.0) as `hub serving` binds
        with open(proj["images"][0], "rb") as handle:
            body = json.dumps({"images": [base64.b64encode(handle.read()).decode()], "top_k": 2})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict/local_ssld", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer["status"] == "000" and len(answer["results"][0]) == 2, answer
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_malformed_pickles_are_weights_errors(tmp_path):
    cases = {"truncated.pdparams": pickle.dumps({"w": np.ones(3, np.float32)})[:-7],
             "split.pdparams": pickle.dumps({"UnpackBigParamInfor@@": {"w": {"OriginShape": (2,), "slices": ["x"]}}}),
             "numpy2.pdparams": b"\x80\x02cnumpy._core.multiarray\n_reconstruct\nq\x00."}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError, match=rf"{name}: (not a pickled|malformed) Paddle state dict"):
            safe_load(str(tmp_path / name))
