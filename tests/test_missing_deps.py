"""Without Paddle (or PyYAML, PaddleHub, ...) every tool prints one line naming the package and the install
command, and exits 2: no traceback. A folder of stand-ins that raise ModuleNotFoundError on import, first on
PYTHONPATH, plays the Python that lacks them."""
import glob
import os
import re
import subprocess
import sys
from typing import List

import pytest

from ppssld.utils import cli
from ppssld.utils.deps import INSTALL_HINT, missing_third_party

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")) + glob.glob(os.path.join(ROOT, "deploy", "python",
                                                                                          "*.py")))
STAND_IN = 'raise ModuleNotFoundError(f"No module named {__name__!r}", name=__name__)\n'


def _without(tmp_path, modules: List[str]) -> str:
    """A folder whose ``<module>.py`` stand-ins fail to import, as if the packages were not installed."""
    fake = tmp_path / "not_installed"
    fake.mkdir(exist_ok=True)
    for name in modules:
        (fake / f"{name}.py").write_text(STAND_IN)
    return str(fake)


def _run(script: str, args: List[str], fake: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([fake, ROOT]))
    env.pop(cli.DEBUG_ENV, None)
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env, cwd=ROOT)


def test_train_without_paddle_says_so_in_one_line(tmp_path):
    proc = _run(os.path.join(ROOT, "tools", "train.py"), ["-c", "any.yaml"], _without(tmp_path, ["paddle"]))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: paddle is not installed: {INSTALL_HINT}\n"
    assert INSTALL_HINT == "run bash scripts/install.sh (or activate .venv: source .venv/bin/activate)"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_script_without_its_packages_exits_2_with_one_line(tmp_path, script):
    module_dir = tmp_path / "module"  # hub_serving_local imports PaddleHub only after checking its folder
    module_dir.mkdir()
    (module_dir / "module.py").write_text("")
    args = ["--module_dir", str(module_dir)] if script.endswith("hub_serving_local.py") else ["-c", "any.yaml"]
    proc = _run(script, args, _without(tmp_path, ["paddle", "yaml", "paddlehub"]))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.fullmatch(r"error: (paddle|yaml|paddlehub) is not installed: " + re.escape(INSTALL_HINT) + "\n",
                        proc.stderr), proc.stderr


def test_a_package_imported_inside_main_is_reported_by_cli_run(capsys):
    def main() -> None:
        raise ModuleNotFoundError("No module named 'paddle2onnx'", name="paddle2onnx.convert")

    with pytest.raises(SystemExit) as exit_info:
        cli.run(main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: paddle2onnx is not installed: {INSTALL_HINT}\n"


@pytest.mark.parametrize("name", ["ppssld.no_such_module", "json", None])
def test_own_and_standard_library_modules_keep_their_traceback(name):
    assert missing_third_party(ModuleNotFoundError("gone", name=name)) is None

    def main() -> None:
        raise ModuleNotFoundError("gone", name=name)

    with pytest.raises(ModuleNotFoundError):
        cli.run(main)
