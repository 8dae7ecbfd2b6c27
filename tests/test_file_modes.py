"""Everything ppssld writes honours the umask; folders are replaced atomically; write failures are clear."""
import errno
import os
import stat

import numpy as np
import paddle
import pytest

from ppssld.arch.zoo import build_backbone
from ppssld.engine.checkpoint import Checkpointer
from ppssld.export.hub import write_hub_module
from ppssld.export.inference import export_model
from ppssld.utils.errors import OutputError
from ppssld.utils.io import atomic_write_json, atomic_write_text
from tests.test_export import make_project


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(root):
    """path -> permission bits of every file and folder under ``root`` (root included)."""
    found = {root: stat.S_IMODE(os.stat(root).st_mode)}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(here, name)
            found[path] = stat.S_IMODE(os.stat(path).st_mode)
    return found


def _check(root, mask):
    bad = {}
    for path, mode in _modes(root).items():
        want = (0o777 if os.path.isdir(path) else 0o666) & ~mask
        if mode != want:
            bad[path] = oct(mode)
    assert not bad, f"umask {oct(mask)}: wrong modes {bad}"


@pytest.mark.parametrize("umask", [0o022, 0o027], indirect=True)
def test_outputs_honour_the_umask(tmp_path, umask):
    out = str(tmp_path / "out")
    Checkpointer(os.path.join(out, "ckpt")).save("latest", build_backbone("MobileNetV3_small_x0_35", class_num=3),
                                                 None, {"epoch": 1})
    atomic_write_json(os.path.join(out, "report.json"), {"a": 1})
    atomic_write_text(os.path.join(out, "list.txt"), "a 1\n")
    os.umask(0o022)  # the project is made with the usual mask; only ppssld's own writes are checked
    proj = make_project(str(tmp_path / "proj"), images=2)
    os.umask(umask)
    result = export_model(proj["config"], weights=proj["ckpt"], save_dir=os.path.join(out, "inference"))
    assert os.path.isfile(os.path.join(result.hub_dir, "module.py"))
    assert {"latest.pdparams", "latest.pdopt", "latest.pdstates"} <= set(os.listdir(os.path.join(out, "ckpt")))
    _check(out, umask)


def test_hub_module_replacement_is_atomic(tmp_path, monkeypatch):
    """An error while writing a new module leaves the old module folder whole; success replaces it."""
    proj = make_project(str(tmp_path / "proj"), images=2)
    result = export_model(proj["config"], weights=proj["ckpt"], save_dir=str(tmp_path / "inference"), with_hub=False)
    out = str(tmp_path / "hub")
    module = write_hub_module(result.model_dir, "mod", out, version="1.0.0")
    before = {p: open(p, "rb").read() for p in _modes(module) if os.path.isfile(p)}

    import ppssld.export.hub as hub

    def broken(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hub, "write_class_names", broken)
    monkeypatch.setattr(hub, "label_list", lambda cfg: ["a", "b", "c"])
    with pytest.raises(OSError):
        write_hub_module(result.model_dir, "mod", out, version="2.0.0")
    assert {p: open(p, "rb").read() for p in _modes(module) if os.path.isfile(p)} == before
    assert os.listdir(out) == ["mod"]  # no temporary folder left beside it
    monkeypatch.undo()
    real_replace = os.replace

    def failing_move_in(src, dst):
        if os.path.basename(str(src)).startswith(".mod.") and os.path.abspath(dst) == os.path.abspath(module):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_move_in)  # the last step fails: the old module must survive it
    with pytest.raises(OSError):
        write_hub_module(result.model_dir, "mod", out, version="2.0.0")
    monkeypatch.undo()
    assert {p: open(p, "rb").read() for p in _modes(module) if os.path.isfile(p)} == before
    assert os.listdir(out) == ["mod"]
    write_hub_module(result.model_dir, "mod", out, version="2.0.0")
    assert "2.0.0" in open(os.path.join(module, "module.py"), encoding="utf-8").read()
    assert os.listdir(out) == ["mod"]


def _tiny_model(seed):
    paddle.seed(seed)
    return paddle.nn.Sequential(paddle.nn.Linear(4, 3))


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    first = _tiny_model(1)
    ckpt.save("latest", first, None, {"epoch": 1})
    real_save = paddle.save

    def full_disk(obj, path, *args, **kwargs):
        if str(path).startswith(os.path.join(str(tmp_path / "ckpt"), ".latest.pdparams")):
            with open(path, "wb") as handle:
                handle.write(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(paddle, "save", full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*latest\.pdparams: No space left on device.*unchanged"):
        ckpt.save("latest", _tiny_model(2), None, {"epoch": 2})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["latest.pdopt", "latest.pdparams", "latest.pdstates"]
    restored = _tiny_model(3)
    states = Checkpointer.load(str(tmp_path / "ckpt" / "latest"), restored, restore_rng=False)
    assert states["epoch"] == 1
    for key, value in first.state_dict().items():
        assert np.array_equal(value.numpy(), restored.state_dict()[key].numpy())


def test_checkpoint_folder_that_cannot_be_created_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # root ignores chmod, but nobody can make a folder under a regular file
    with pytest.raises(OutputError, match=r"cannot create the output folder .*a_file/ckpt"):
        Checkpointer(str(blocker / "ckpt")).save("latest", _tiny_model(1), None, {"epoch": 1})
