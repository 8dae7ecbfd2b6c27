"""Class-name files: PaddleClas ``class_id_map_file`` (``id name``) or one name per line."""
import logging
import os
import re
from typing import Any, Dict, List, Optional

from ppssld.utils.errors import ConfigError
from ppssld.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

_ID_LINE = re.compile(r"^(\d+)(?:[ \t]+(.*))?$")


def parse_class_names(text: str, source: str = "class names") -> List[str]:
    """Parse a class-name file's text.

    Two layouts are accepted, decided for the whole file:

    * PaddleClas ``class_id_map_file``: every non-blank line is ``<int id> <name>`` (the name is
      everything after the first run of spaces/tabs and may contain spaces); ids must cover
      ``0 .. N-1`` exactly once, in any order.
    * one name per line, the line number (from 0, blank lines skipped) being the id.

    Args:
        text: the file's content.
        source: file name for messages.
    Returns:
        Names indexed by class id.
    Raises:
        ConfigError: empty file, duplicate or missing ids.
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ConfigError(f"{source}: no class names in the file")
    matches = [_ID_LINE.match(line) for line in lines]
    if all(m is not None and m.group(2) for m in matches):
        by_id: Dict[int, str] = {}
        for match in matches:
            cid, name = int(match.group(1)), match.group(2).strip()
            if cid in by_id:
                raise ConfigError(f"{source}: class id {cid} appears twice ({by_id[cid]!r} and {name!r})")
            by_id[cid] = name
        missing = [i for i in range(len(by_id)) if i not in by_id]
        if missing:
            raise ConfigError(f"{source}: class ids must be 0..{len(by_id) - 1} with none missing; "
                              f"missing {missing[:10]} (max id {max(by_id)})")
        return [by_id[i] for i in range(len(by_id))]
    return lines


def read_class_names(path: str) -> List[str]:
    """Read a class-name file (see :func:`parse_class_names`).

    Args:
        path: the file (UTF-8).
    Returns:
        Names indexed by class id.
    Raises:
        ConfigError: missing or malformed file.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"class-name file {path!r} does not exist (Global.class_names or "
                          f"Infer.PostProcess.class_id_map_file)")
    with open(path, "r", encoding="utf-8-sig") as handle:
        return parse_class_names(handle.read(), path)


def class_names_path(config: Dict[str, Any]) -> Optional[str]:
    """The class-name file a config names: ``Global.class_names``, else ``Infer.PostProcess.class_id_map_file``."""
    glob = config.get("Global") or {}
    if glob.get("class_names"):
        return str(glob["class_names"])
    post = (config.get("Infer") or {}).get("PostProcess") or {}
    path = post.get("class_id_map_file")
    return str(path) if path else None


def config_class_names(config: Dict[str, Any], class_num: Optional[int]) -> Optional[List[str]]:
    """Class names for a config, checked against the classifier size.

    Args:
        config: the full config.
        class_num: the model's number of outputs (None: not checked).
    Returns:
        The names, or None when the config names no file.
    Raises:
        ConfigError: the file's class count differs from ``class_num``.
    """
    path = class_names_path(config)
    if path is None:
        return None
    names = read_class_names(path)
    if class_num is not None and len(names) != class_num:
        raise ConfigError(f"{path} has {len(names)} class names but the model has class_num={class_num}; "
                          f"they must match so label ids map to names")
    return names


def write_class_names(path: str, names: List[str]) -> None:
    """Write names in the PaddleClas ``id name`` layout (atomically)."""
    atomic_write_text(path, "".join(f"{i} {name}\n" for i, name in enumerate(names)))
