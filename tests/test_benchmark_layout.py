"""The benchmark folder's layout (docs/benchmarks.md): scripts in ``benchmark/<group>/`` packages, results in
``benchmark/results/<group>/``, no module named like a library module, every import of a sibling absolute
(``benchmark.<group>.<name>``), and a script runs both as a file and with ``-m``."""
import ast
import os
import subprocess
import sys
from typing import Dict, List

import pytest

from benchmark import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmark")
SPECIAL = {"__init__", "__main__"}


def _modules(top: str) -> Dict[str, str]:
    """``stem -> path relative to the repository`` of every ``.py`` under ``top`` (results excluded)."""
    found: Dict[str, str] = {}
    for dirpath, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "results")]
        for name in names:
            if name.endswith(".py"):
                found.setdefault(name[:-3], os.path.relpath(os.path.join(dirpath, name), ROOT))
    return found


def test_every_folder_is_a_group_package_and_results_mirror_them() -> None:
    folders = {d for d in os.listdir(BENCH) if os.path.isdir(os.path.join(BENCH, d))} - {"results", "__pycache__"}
    assert folders == set(common.GROUPS)
    for group in common.GROUPS:
        assert os.path.isfile(os.path.join(BENCH, group, "__init__.py")), group
    results = os.path.join(BENCH, "results")
    loose = [n for n in os.listdir(results) if os.path.isfile(os.path.join(results, n))]
    assert not loose, f"results files outside a group folder: {loose}"
    assert set(os.listdir(results)) <= set(common.GROUPS)


def test_no_benchmark_module_shares_a_name_with_a_library_module() -> None:
    library = set(_modules(os.path.join(ROOT, "ppssld"))) - SPECIAL
    shared = sorted((set(_modules(BENCH)) - SPECIAL) & library)
    assert not shared, f"benchmark modules named like ppssld modules: {shared}"


def _bare_sibling_imports(path: str, siblings: set) -> List[str]:
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    bad = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        bad += [n for n in names if n.split(".")[0] in siblings]
    return bad


def test_benchmark_modules_import_each_other_by_absolute_name() -> None:
    modules = _modules(BENCH)
    siblings = set(modules) - SPECIAL
    bad = {rel: names for rel in modules.values()
           if (names := _bare_sibling_imports(os.path.join(ROOT, rel), siblings))}
    assert not bad, f"bare imports of benchmark modules (use benchmark.<group>.<name>): {bad}"


def test_results_dir_is_the_scripts_group_folder() -> None:
    script = os.path.join(BENCH, "mining", "mining_scale.py")
    assert common.results_dir(script) == os.path.join(BENCH, "results", "mining")
    with pytest.raises(ValueError, match="not in a benchmark group folder"):
        common.results_dir(os.path.join(BENCH, "common.py"))


@pytest.mark.parametrize("how", ["file", "module"])
def test_a_script_runs_as_a_file_and_as_a_module(how: str, tmp_path) -> None:
    """paddleclas_configs imports ``benchmark.common`` at module level (no paddle): its argparse error proves the
    import worked, as a file from elsewhere (the script puts the root on sys.path) and with ``-m`` from the root."""
    args = [os.path.join(BENCH, "compat", "paddleclas_configs.py")] if how == "file" else [
        "-m", "benchmark.compat.paddleclas_configs"]
    env = dict(os.environ, PYTHONPATH="")  # nothing on sys.path but what the interpreter and the script put there
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120,
                          cwd=str(tmp_path) if how == "file" else ROOT)
    assert proc.returncode == 2 and "--paddleclas-dir" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
