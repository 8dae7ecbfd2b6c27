"""Every argument of every tools/*.py and deploy/python/*.py command line has a help line, and the help of an
optional argument names its default: a newcomer reads ``--help`` instead of the source.

The parser is caught where the script's ``main`` parses: ``ArgumentParser.parse_args`` / ``parse_known_args``
are replaced by a stand-in that hands the parser over and stops the script before it does anything.
"""
import argparse
import glob
import os
import runpy
import sys
from typing import List

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")) + glob.glob(os.path.join(ROOT, "deploy", "python",
                                                                                          "*.py")))


class ParserCaught(Exception):
    """Raised by the stand-in parse method, carrying the parser the script built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser caught")
        self.parser = parser


def parser_of(script: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """Run ``script``'s ``main`` (as ``script --help``) until it parses its arguments; return its parser."""
    def catch(self: argparse.ArgumentParser, *args, **kwargs):
        raise ParserCaught(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts put the repository first
    namespace = runpy.run_path(script, run_name="ppssld_cli_help_probe")
    with pytest.raises(ParserCaught) as caught:
        namespace["main"]()
    return caught.value.parser


def is_builtin_help(action: argparse.Action) -> bool:
    """argparse's own ``-h/--help``."""
    return action.dest == "help" and "-h" in action.option_strings


def missing_help(parser: argparse.ArgumentParser) -> List[str]:
    """Arguments whose help is empty, and optional arguments whose help does not name their default."""
    bad = []
    for action in parser._actions:  # noqa: SLF001  (argparse keeps no public list of a parser's arguments)
        if is_builtin_help(action):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = action.help if action.help not in (None, argparse.SUPPRESS) else ""
        if not text.strip():
            bad.append(f"{name}: no help")
        elif action.option_strings and not action.required and "default" not in text.lower():
            bad.append(f"{name}: help does not say the default ({text!r})")
    return bad


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_argument_has_a_help_line_naming_its_default(script, monkeypatch):
    parser = parser_of(script, monkeypatch)
    assert len(parser._actions) > 1, "no arguments caught"  # noqa: SLF001
    assert missing_help(parser) == []


def test_a_removed_help_is_caught(monkeypatch):
    parser = parser_of(os.path.join(ROOT, "tools", "select_unlabeled.py"), monkeypatch)
    cap = next(a for a in parser._actions if "--cap" in a.option_strings)  # noqa: SLF001
    cap.help = None
    assert missing_help(parser) == ["--cap: no help"]
    cap.help = "at most this many images"
    assert missing_help(parser) == [f"--cap: help does not say the default ({cap.help!r})"]


def test_check_data_takes_several_overrides_after_one_o_like_every_tool():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import check_data
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    from ppssld.utils import cli

    args = check_data.parse_args(["-c", "cfg.yaml", "-o", "a=1", "b=2", "-o", "c=3"])
    assert cli.flat_overrides(args.override) == ["a=1", "b=2", "c=3"]
