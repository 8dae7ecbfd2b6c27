"""The floors of ppssld (docs/architecture.md): no module imports from a higher floor, no ``_private``
name is imported from another module, and ppssld never imports ``tools/``, ``deploy/`` or ``benchmark/``.

Every module under ``ppssld/`` is parsed with :mod:`ast` (nothing is imported or run), and every import
counts: module level, inside functions, under ``if TYPE_CHECKING``, and ``importlib.import_module`` /
``__import__`` with a literal name. The floor table is read from the doc's marked table, the one source.
The ``KNOWN_*`` sets list today's violations; they may only shrink.
"""
import ast
import os
import re
import sys
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "ppssld"
DOC = os.path.join(ROOT, "docs", "architecture.md")
OUTSIDE_DIRS = ("tools", "deploy", "benchmark")
TABLE_BEGIN, TABLE_END = "<!-- floors:begin", "<!-- floors:end -->"

Pair = Tuple[str, str]

# Today's violations, (importer, imported). The layout move of issue 25 removes them: when one is gone,
# the test names the entry to delete here. Nothing may be added without a reason in the commit.
KNOWN_FLOOR: Set[Pair] = set()
KNOWN_PRIVATE: Set[Pair] = set()
KNOWN_OUTSIDE: Set[Pair] = set()


class Import(NamedTuple):
    """One import: the module it reads from (absolute) and the names taken from it (``from`` form)."""
    importer: str
    module: str
    names: Tuple[str, ...]
    line: int


# ---------------------------------------------------------------- the checker (pure functions)

def module_name(rel_path: str) -> str:
    """``ppssld/data/datasets/imagenet.py`` -> ``ppssld.data.datasets.imagenet``; a package's ``__init__.py`` -> the package."""
    parts = rel_path[:-3].replace(os.sep, "/").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(importer: str, is_package: bool, level: int, module: Optional[str]) -> str:
    """The absolute module name of ``from <level dots><module> import ...`` written in ``importer``."""
    if not level:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_import(node: ast.Call) -> Optional[str]:
    """The literal name of ``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def imports_of(source: str, importer: str, is_package: bool = False) -> List[Import]:
    """Every import in ``source`` (the module ``importer``), wherever it stands in the file."""
    found: List[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(importer, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = absolute(importer, is_package, node.level, node.module)
            found.append(Import(importer, module, tuple(a.name for a in node.names), node.lineno))
        elif isinstance(node, ast.Call) and _literal_import(node):
            found.append(Import(importer, _literal_import(node), (), node.lineno))
    return found


def targets(imp: Import, modules: Iterable[str]) -> List[str]:
    """The modules ``imp`` loads: ``from a import b`` loads ``a.b`` when that is a module, else ``a``."""
    modules = set(modules)
    out = [f"{imp.module}.{name}" if f"{imp.module}.{name}" in modules else imp.module for name in imp.names]
    return out or [imp.module]


def is_private(name: str) -> bool:
    """``_x`` is private; ``__x__`` (dunder) and ``*`` are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def parse_floor_table(markdown: str) -> Dict[str, int]:
    """``place -> floor`` from the rows between the floor-table markers (``| 2 | `ppssld/arch/` | ...``)."""
    if TABLE_BEGIN not in markdown or TABLE_END not in markdown:
        raise ValueError(f"no floor table: the doc needs {TABLE_BEGIN} ... {TABLE_END}")
    body = markdown.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0]
    table: Dict[str, int] = {}
    for row in re.finditer(r"^\|\s*(\d+)\s*\|\s*`([^`]+)`\s*\|", body, re.M):
        place = row.group(2)
        if place in table:
            raise ValueError(f"{place} is listed twice in the floor table")
        table[place] = int(row.group(1))
    return table


def floor_of(rel_path: str, table: Dict[str, int]) -> Optional[int]:
    """The floor of a file: its own row, else the row of the closest folder holding it."""
    rel_path = rel_path.replace(os.sep, "/")
    if rel_path in table:
        return table[rel_path]
    folders = [p for p in table if p.endswith("/") and rel_path.startswith(p)]
    return table[max(folders, key=len)] if folders else None


def floor_violations(imports: Iterable[Import], modules: Dict[str, str],
                     floor: Callable[[str], Optional[int]]) -> Set[Pair]:
    """(importer, imported) where the imported ppssld module stands on a higher floor than its importer."""
    bad: Set[Pair] = set()
    for imp in imports:
        for target in targets(imp, modules):
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and floor(modules[target]) > floor(modules[imp.importer]):
                bad.add((imp.importer, target))
    return bad


def private_violations(imports: Iterable[Import], modules: Iterable[str]) -> Set[Pair]:
    """(importer, ``module._name``) for every ``_private`` name or module imported from another module."""
    modules = set(modules)
    bad: Set[Pair] = set()
    for imp in imports:
        if any(is_private(part) for part in imp.module.split(".")):
            bad.add((imp.importer, imp.module))
        for name in imp.names:
            if is_private(name) and imp.module != imp.importer:
                bad.add((imp.importer, f"{imp.module}.{name}"))
    return bad


def outside_names(root: str) -> Set[str]:
    """Top-level names that reach ``tools/``, ``deploy/``, ``benchmark/``: the folders, their scripts."""
    names = set(OUTSIDE_DIRS)
    for folder in OUTSIDE_DIRS:
        for _dirpath, _dirs, files in os.walk(os.path.join(root, folder)):
            names.update(f[:-3] for f in files if f.endswith(".py"))
    return names - set(sys.stdlib_module_names)


def outside_violations(imports: Iterable[Import], outside: Set[str]) -> Set[Pair]:
    """(importer, imported) for an import whose top-level name is an outside folder or one of its scripts."""
    return {(imp.importer, imp.module) for imp in imports if imp.module.split(".")[0] in outside}


def reconcile(kind: str, found: Set[Pair], known: Set[Pair]) -> List[str]:
    """Messages for new violations and for known ones that are gone (the known list only shrinks)."""
    lines = [f"{kind}: {a} imports {b} (not allowed; not in KNOWN_{kind.upper()})" for a, b in sorted(found - known)]
    lines += [f"{kind}: {a} -> {b} is gone: delete {(a, b)!r} from KNOWN_{kind.upper()}"
              for a, b in sorted(known - found)]
    return lines


# ---------------------------------------------------------------- the real package

def package_files(root: str = ROOT) -> Dict[str, str]:
    """``module name -> path relative to root`` for every ``.py`` under ``ppssld/``."""
    files: Dict[str, str] = {}
    for dirpath, dirs, names in os.walk(os.path.join(root, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in names if n.endswith(".py")):
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            files[module_name(rel)] = rel
    return files


def package_imports(files: Dict[str, str], root: str = ROOT) -> List[Import]:
    """Every import of every ppssld module."""
    found: List[Import] = []
    for module, rel in files.items():
        with open(os.path.join(root, rel), encoding="utf-8") as fh:
            found += imports_of(fh.read(), module, rel.endswith("__init__.py"))
    return found


def doc_table() -> Dict[str, int]:
    """The floor table of docs/architecture.md."""
    with open(DOC, encoding="utf-8") as fh:
        return parse_floor_table(fh.read())


def test_floor_table_places_exist_and_every_module_is_placed() -> None:
    table = doc_table()
    assert set(table.values()) == {1, 2, 3, 4}, table
    missing = [p for p in table if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, f"the floor table of docs/architecture.md names places that do not exist: {missing}"
    unplaced = [rel for rel in package_files().values() if floor_of(rel, table) is None]
    assert not unplaced, f"modules with no floor (add a row to the floor table of docs/architecture.md): {unplaced}"
    for folder in sorted(os.listdir(os.path.join(ROOT, PACKAGE))):
        if os.path.isfile(os.path.join(ROOT, PACKAGE, folder, "__init__.py")):
            assert f"{PACKAGE}/{folder}/" in table, f"package {folder} has no row of its own in the floor table"


def test_no_import_from_a_higher_floor() -> None:
    table, files = doc_table(), package_files()
    found = floor_violations(package_imports(files), files, lambda rel: floor_of(rel, table))
    problems = reconcile("floor", found, KNOWN_FLOOR)
    assert not problems, "\n".join(problems)


def test_no_private_name_imported_from_another_module() -> None:
    files = package_files()
    found = private_violations(package_imports(files), files)
    problems = reconcile("private", found, KNOWN_PRIVATE)
    assert not problems, "\n".join(problems)


def test_ppssld_never_imports_tools_deploy_benchmark() -> None:
    found = outside_violations(package_imports(package_files()), outside_names(ROOT))
    problems = reconcile("outside", found, KNOWN_OUTSIDE)
    assert not problems, "\n".join(problems)


def test_doc_explains_the_check_the_moves_and_what_is_left() -> None:
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    assert "python -m pytest tests/test_architecture.py" in text.split("\n\n", 2)[1]
    assert "## The layout move" in text and "Left for a later step" in text
    moved = text.split("## The layout move", 1)[1]
    for place in ("recipes/ssld/runner.py", "mining/dedup/", "data/transforms/", "arch/roles.py"):
        assert place in moved and os.path.exists(os.path.join(ROOT, "ppssld", place)), place


# ---------------------------------------------------------------- the checker catches what it should

SYNTHETIC = {"ppssld": "ppssld/__init__.py", "ppssld.utils": "ppssld/utils/__init__.py",
             "ppssld.utils.low": "ppssld/utils/low.py", "ppssld.data": "ppssld/data/__init__.py",
             "ppssld.data.ops": "ppssld/data/ops.py", "ppssld.engine": "ppssld/engine/__init__.py",
             "ppssld.engine.trainer": "ppssld/engine/trainer.py", "ppssld.top": "ppssld/top.py"}
SYNTHETIC_TABLE = {"ppssld/__init__.py": 1, "ppssld/utils/": 1, "ppssld/data/": 2, "ppssld/engine/": 3,
                   "ppssld/top.py": 4}


def _floor_pairs(source: str, importer: str, is_package: bool = False) -> Set[Pair]:
    return floor_violations(imports_of(source, importer, is_package), SYNTHETIC,
                            lambda rel: floor_of(rel, SYNTHETIC_TABLE))


def test_checker_finds_higher_floor_imports_anywhere_in_a_file() -> None:
    source = ("import os\nfrom typing import TYPE_CHECKING\nfrom ppssld.utils import low\n"
              "if TYPE_CHECKING:\n    from ppssld.data.ops import Op\n"
              "def f():\n    import ppssld.engine.trainer\n"
              "class C:\n    def g(self):\n        importlib.import_module('ppssld.engine')\n")
    assert _floor_pairs(source, "ppssld.utils.low") == {
        ("ppssld.utils.low", "ppssld.data.ops"), ("ppssld.utils.low", "ppssld.engine.trainer"),
        ("ppssld.utils.low", "ppssld.engine")}
    assert _floor_pairs(source, "ppssld.engine.trainer") == set()  # down and level are fine


def test_checker_resolves_relative_and_package_imports() -> None:
    assert _floor_pairs("from ..engine import trainer\n", "ppssld.data.ops") == {
        ("ppssld.data.ops", "ppssld.engine.trainer")}
    assert _floor_pairs("from .. import engine\n", "ppssld.data", is_package=True) == {
        ("ppssld.data", "ppssld.engine")}
    assert _floor_pairs("from ppssld.engine.trainer import Trainer, fit\n", "ppssld.data.ops") == {
        ("ppssld.data.ops", "ppssld.engine.trainer")}
    assert _floor_pairs("from . import ops\nfrom ppssld import __version__\n", "ppssld.data", True) == set()


def test_checker_finds_private_names_and_modules() -> None:
    source = ("from ppssld.data.ops import _size, Op, __all__\nfrom .ops import _backend\n"
              "def f():\n    from ppssld.utils._hidden import x\n")
    assert private_violations(imports_of(source, "ppssld.data.other"), SYNTHETIC) == {
        ("ppssld.data.other", "ppssld.data.ops._size"), ("ppssld.data.other", "ppssld.data.ops._backend"),
        ("ppssld.data.other", "ppssld.utils._hidden")}
    assert not private_violations(imports_of("from ppssld import __version__\n", "ppssld.x"), SYNTHETIC)


def test_checker_finds_imports_of_tools_deploy_benchmark() -> None:
    outside = outside_names(ROOT)
    assert {"tools", "deploy", "benchmark", "train", "predict_cls"} <= outside
    source = ("import tools.train\nfrom benchmark.common import x\nimport deploy\n"
              "def f():\n    import train\n    __import__('predict_cls')\nimport os, paddle\n")
    assert {b for _a, b in outside_violations(imports_of(source, "ppssld.m"), outside)} == {
        "tools.train", "benchmark.common", "deploy", "train", "predict_cls"}
    assert not outside_violations(imports_of("from . import train\n", "ppssld.engine", True), outside)


def test_known_lists_only_shrink() -> None:
    known = {("a", "b"), ("c", "d")}
    assert reconcile("floor", {("a", "b"), ("c", "d")}, known) == []
    new = reconcile("floor", {("a", "b"), ("c", "d"), ("e", "f")}, known)
    assert len(new) == 1 and "e imports f" in new[0]
    gone = reconcile("floor", {("a", "b")}, known)
    assert len(gone) == 1 and "delete ('c', 'd') from KNOWN_FLOOR" in gone[0]


def test_floor_table_parsing() -> None:
    doc = (f"intro\n{TABLE_BEGIN}\n| floor | place | owns |\n|---|---|---|\n| 1 | `ppssld/utils/` | x |\n"
           f"| 2 | `ppssld/arch/` | y |\n{TABLE_END}\n| 9 | `ppssld/ignored/` | outside the markers |\n")
    table = parse_floor_table(doc)
    assert table == {"ppssld/utils/": 1, "ppssld/arch/": 2}
    assert floor_of("ppssld/arch/zoo.py", table) == 2 and floor_of("ppssld/recipes/search.py", table) is None


def test_doc_counts_the_known_violations() -> None:
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    for label, known in (("higher floor", KNOWN_FLOOR), ("`_private` name", KNOWN_PRIVATE),
                         ("tools/deploy/benchmark", KNOWN_OUTSIDE)):
        row = re.search(rf"^\| {re.escape(label)} \| (\d+) \|", text, re.M)
        assert row, f"docs/architecture.md's known-violations table has no '{label}' row"
        assert int(row.group(1)) == len(known), \
            f"docs/architecture.md counts {row.group(1)} '{label}' violations, the test's KNOWN set {len(known)}"
