"""Value checks shared by every validator: Python's ``bool`` is an ``int``, and no config value should pass as one.

``is_int(True)`` and ``is_number(False)`` are False, so ``epochs: true`` or ``lr: yes`` in a YAML file is
refused where a count or a number belongs, with the caller's own message.
"""
from typing import Any


def is_int(value: Any) -> bool:
    """Whether ``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is an ``int`` or ``float`` and not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
