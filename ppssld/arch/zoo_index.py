"""Import one PaddleClas backbone's module without PaddleClas's package-level imports.

``import paddleclas`` (and any ``paddleclas.ppcls...`` import, which runs every parent package's
``__init__``) imports the whole zoo, the deploy tools, faiss, cv2 and scikit-learn (through
``ppcls.utils.metrics``): about a second before one backbone can be built. Used only by
:mod:`ppssld.arch.zoo` (the one door to the zoo): the backbone package's ``__init__`` is *read*
(its ``from .x.y import Name`` lines, never run) to find the module that defines a name, and that
module is imported with its parent packages as empty placeholders, which are removed again afterwards,
so a later full ``import paddleclas`` runs every ``__init__`` as usual and reuses the module already loaded.
Anything the index cannot place, or a module that needs more of a package than its files, returns
``None`` and the caller imports the full zoo.
"""
import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

ROOT = "paddleclas"
BACKBONE = "paddleclas.ppcls.arch.backbone"


@lru_cache(maxsize=1)
def factory_modules() -> Dict[str, Tuple[str, str]]:
    """``{name: (absolute module, attribute)}`` from the top-level ``from .m import A, B as C`` lines of
    the installed backbone package's ``__init__.py`` (parsed, not executed); empty if it cannot be read."""
    spec = importlib.util.find_spec(ROOT)  # a top-level find_spec does not import the package
    if spec is None or not spec.submodule_search_locations:
        return {}
    init = os.path.join(list(spec.submodule_search_locations)[0], "ppcls", "arch", "backbone", "__init__.py")
    try:
        with open(init, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=init)
    except (OSError, SyntaxError, ValueError) as exc:
        logger.debug("zoo index: %s unreadable (%s); the full zoo is imported", init, exc)
        return {}
    index: Dict[str, Tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                if alias.name != "*":
                    index[alias.asname or alias.name] = (f"{BACKBONE}.{node.module}", alias.name)
    return index


class _PlaceholderPackages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``paddleclas`` packages and loads each as an empty package (its ``__init__`` not run)."""

    def __init__(self) -> None:
        self.made: List[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != ROOT and not fullname.startswith(ROOT + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None:
            return None  # a plain module: the normal finders load it
        placeholder = importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        placeholder.submodule_search_locations = list(spec.submodule_search_locations)
        return placeholder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: Any) -> None:
        self.made.append(module.__name__)


def load_factory(name: str) -> Optional[Any]:
    """The zoo object ``name`` imported alone, or ``None`` (unknown to the index, the zoo package already
    imported, or the module needs its packages' ``__init__``): the caller then imports the full zoo."""
    entry = factory_modules().get(name)
    if entry is None or ROOT in sys.modules:
        return None
    module_name, attr = entry
    before = set(sys.modules)
    finder = _PlaceholderPackages()
    sys.meta_path.insert(0, finder)
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attr, None)
    except ImportError as exc:
        logger.debug("zoo index: %s needs more of paddleclas (%s); the full zoo is imported", module_name, exc)
        found = None
    finally:
        sys.meta_path.remove(finder)
    if found is None:  # leave no half-loaded paddleclas module behind for the full import
        for key in set(sys.modules) - before:
            if key == ROOT or key.startswith(ROOT + "."):
                del sys.modules[key]
        return None
    for key in finder.made:
        sys.modules.pop(key, None)
    _init_ppcls_logger()
    return found


def _init_ppcls_logger() -> None:
    """Set up PaddleClas's ``ppcls`` logger as ``import paddleclas`` does (its backbones log through it)."""
    ppcls_logger = sys.modules.get("paddleclas.ppcls.utils.logger")
    if ppcls_logger is not None and getattr(ppcls_logger, "_logger", True) is None:
        ppcls_logger.init_logger()
