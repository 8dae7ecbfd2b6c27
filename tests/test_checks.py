"""utils/checks.py: a YAML boolean never passes as a count or a number."""
import math

from ppssld.utils.checks import is_int, is_number


def test_bool_is_neither_int_nor_number():
    assert [is_int(v) for v in (0, -3, 7, True, False, 2.0, "3", None)] == [True] * 3 + [False] * 5
    assert [is_number(v) for v in (0, 2.5, -1e12, math.inf, True, False, "1", None, [1])] == [True] * 4 + [False] * 5
