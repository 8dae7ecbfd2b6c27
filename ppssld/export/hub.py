"""PaddleHub module: writer (``write_hub_module``) and the class its ``module.py`` delegates to.

The module folder holds ``module.py`` (with ``@moduleinfo``), ``__init__.py``, the exported
Paddle Inference files, ``inference.yml`` and ``label_list.txt``. ``module.py`` imports
:class:`HubClassifier` from ppssld, so the hub module preprocesses with the same code as
the deploy predictor. It never lists requirements (``hub install`` would pip-install them).
"""
import base64
import binascii
import keyword
import logging
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ppssld import __version__
from ppssld.data.image import read_bytes
from ppssld.export.infer_config import INFER_CONFIG, label_list, read_infer_config
from ppssld.export.labels import write_class_names
from ppssld.export.runtime import Predictor, resolve_model_files
from ppssld.utils.errors import ConfigError, DataError
from ppssld.utils.io import atomic_write_text, make_temp_dir, publish_dir

logger = logging.getLogger(__name__)

MODULE_VERSION = "1.0.0"

_TEMPLATE = '''"""PaddleHub module {name}: image classification with {model} (written by ppssld {ppssld})."""
import os
from typing import Any, Dict, List, Optional

from paddlehub.module.module import moduleinfo, serving

try:
    from ppssld.export.hub import HubClassifier
except ImportError as exc:
    raise ImportError("PaddleHub module {name} needs the ppssld package (pip install ppssld): " + str(exc)) from exc


@moduleinfo(name={name!r}, version={version!r}, summary={summary!r}, author="ppssld", author_email="",
            type="cv/classification")
class {cls}:
    """{model}: ``predict(images=[BGR ndarray] | paths=[...], top_k=...)`` -> one ``{{label: score}}`` per image."""

    def __init__(self, use_gpu: bool = False, enable_mkldnn: bool = False, cpu_threads: int = 1,
                 batch_size: int = 1) -> None:
        here = os.path.dirname(os.path.abspath(__file__))
        self.classifier = HubClassifier(here, use_gpu=use_gpu, enable_mkldnn=enable_mkldnn,
                                        cpu_threads=cpu_threads, batch_size=batch_size)

    def predict(self, images: Optional[List[Any]] = None, paths: Optional[List[str]] = None,
                top_k: Optional[int] = None) -> List[Dict[str, float]]:
        """Top-k per image, highest score first. ``images`` are HWC uint8 BGR arrays (cv2.imread)."""
        return self.classifier.predict(images=images, paths=paths, top_k=top_k)

    @serving
    def serving_method(self, images: List[str], top_k: Optional[int] = None, **kwargs: Any) -> List[Dict[str, float]]:
        """For ``hub serving``: ``images`` are base64-encoded image files."""
        return self.classifier.serve(images, top_k=top_k)
'''


def default_module_name(name: str) -> str:
    """A valid module (Python package) name from an export name: lower case, ``_`` for other characters."""
    text = re.sub(r"\W", "_", name.lower())
    return text if text and not text[0].isdigit() else f"m_{text}"


def check_module_name(name: str) -> None:
    """Raise ConfigError unless ``name`` can be a PaddleHub module (it is imported as a package)."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"hub module name {name!r} must be a Python identifier (letters, digits, '_', not "
                          f"starting with a digit), e.g. {default_module_name(name or 'model')!r}")


def _class_name(name: str) -> str:
    parts = [p for p in name.split("_") if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "Module"
    return text if text.isidentifier() and not keyword.iskeyword(text) else "HubModule"


def write_hub_module(model_dir: str, name: str, out_dir: str, version: str = MODULE_VERSION,
                     summary: Optional[str] = None) -> str:
    """Write ``<out_dir>/<name>/``, a PaddleHub module serving the exported model.

    Args:
        model_dir: the exported ``..._infer`` folder.
        name: module name (a Python identifier; ``hub install`` registers it under this name).
        out_dir: parent folder.
        version: module version.
        summary: one-line description (default from ``inference.yml``).
    Returns:
        The module folder.
    Raises:
        ModelDirError: incomplete model folder. ConfigError: invalid name.
    """
    check_module_name(name)
    files = resolve_model_files(model_dir)
    infer_cfg = read_infer_config(files.config)
    glob = infer_cfg.get("Global") or {}
    model = str(glob.get("model_name", name))
    summary = summary or f"{model} image classifier ({glob.get('class_num', '?')} classes), exported by ppssld"
    final = os.path.join(out_dir, name)
    tmp = make_temp_dir(final)
    try:
        for path in (p for p in (files.model, files.params, files.config) if p):
            shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
        names = label_list(infer_cfg)
        if names:
            write_class_names(os.path.join(tmp, "label_list.txt"), names)
        atomic_write_text(os.path.join(tmp, "__init__.py"), "")
        atomic_write_text(os.path.join(tmp, "module.py"), _TEMPLATE.format(
            name=name, version=str(version), summary=summary, model=model, cls=_class_name(name), ppssld=__version__))
        publish_dir(tmp, final)  # the old module stays whole until the new one is complete
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote PaddleHub module %s (hub install %s)", final, final)
    return final


def _as_bgr_item(img: Any, index: int) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] not in (3, 4):
        shape = getattr(img, "shape", None)
        raise DataError(f"images[{index}] must be an HWC BGR uint8 array (as cv2.imread returns), got "
                        f"{type(img).__name__} {shape}")
    return np.ascontiguousarray(img[:, :, 2::-1])


class HubClassifier:
    """What a generated ``module.py`` calls: the shared :class:`~ppssld.export.runtime.Predictor`.

    Args:
        directory: the module folder.
        use_gpu: run on GPU.
        enable_mkldnn: oneDNN on CPU.
        cpu_threads: CPU threads.
        batch_size: images per forward pass.
    """

    def __init__(self, directory: str, use_gpu: bool = False, enable_mkldnn: bool = False, cpu_threads: int = 1,
                 batch_size: int = 1) -> None:
        self.predictor = Predictor(directory, device="gpu" if use_gpu else "cpu", enable_mkldnn=enable_mkldnn,
                                   cpu_threads=cpu_threads, batch_size=batch_size)

    def _dicts(self, items: Sequence[Any], top_k: Optional[int]) -> List[Dict[str, float]]:
        tops = self.predictor.results(self.predictor.outputs(items), top_k)
        out = []
        for top in tops:
            row: Dict[str, float] = {}
            for cid, score, label in zip(top["class_ids"], top["scores"], top["label_names"], strict=True):
                key = label
                row[key if key not in row else f"{key} ({cid})"] = score
            out.append(row)
        return out

    def predict(self, images: Optional[Sequence[Any]] = None, paths: Optional[Sequence[str]] = None,
                top_k: Optional[int] = None) -> List[Dict[str, float]]:
        """Classify arrays and/or files (arrays first).

        Args:
            images: HWC uint8 BGR arrays (PaddleHub convention, as ``cv2.imread`` gives).
            paths: image files.
            top_k: how many classes per image (default from ``inference.yml``).
        Returns:
            Per image, ``{label_name: score}`` of the top-k, in descending score.
        Raises:
            DataError: neither input given, a bad array, or an unreadable file (named).
        """
        if not images and not paths:
            raise DataError("give images=[ndarray, ...] or paths=[file, ...]")
        items: List[Any] = [_as_bgr_item(img, i) for i, img in enumerate(images or [])]
        items += [read_bytes(path) for path in paths or []]
        return self._dicts(items, top_k)

    def serve(self, images: Sequence[str], top_k: Optional[int] = None) -> List[Dict[str, float]]:
        """``hub serving``: base64-encoded image files in, the same dicts as :meth:`predict` out."""
        items = []
        for i, text in enumerate(images or []):
            try:
                items.append(base64.b64decode(text, validate=False))
            except (binascii.Error, TypeError, ValueError) as exc:
                raise DataError(f"images[{i}] is not base64 text: {exc}") from exc
        if not items:
            raise DataError("give images=[base64 image, ...]")
        return self._dicts(items, top_k)


def module_summary(module_dir: str) -> Dict[str, Any]:
    """Model name, class count and file list of a written module folder (for tools and tests)."""
    cfg = read_infer_config(os.path.join(module_dir, INFER_CONFIG))
    return {"model_name": cfg["Global"].get("model_name"), "class_num": cfg["Global"].get("class_num"),
            "files": sorted(os.listdir(module_dir))}
