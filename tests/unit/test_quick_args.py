"""sitestack/quickargs.py: `clone` and `pack` parse plain lines without argparse, and agree
with argparse wherever they answer (`venv`'s cases: test_venv_quick.py)."""

from __future__ import annotations

import pytest

from sitestack.cli import _command_module, _quick_args, parser

CLONE = [
    ["clone", "s/1", "--prefix", "P"],
    ["clone", "--prefix", "P"],
    ["--root", "/r", "clone", "s/1", "--prefix=P", "--mode", "hardlink", "--json"],
    ["clone", "s/1", "--prefix", "P", "--mode=thin", "-j", "3", "--force", "--module-dir", "M"],
    ["clone", "s/1", "--prefix", "P", "--jobs", "08", "--root", "/q"],
    ["clone", "s/1", "--prefix", "P", "--jobs=0"],
    ["clone", "s/1", "--prefix", "P", "--jobs", "x"],
    ["clone", "s/1", "--prefix", "P", "--jobs", "-1"],
    ["clone", "s/1", "--prefix", "P", "--mode", "fast"],
    ["clone", "s/1", "--prefix", "P", "--module"],
    ["clone", "s/1", "--prefix", "P", "--module", "m"],
    ["clone", "s/1"],
    ["clone", "s/1", "t/2", "--prefix", "P"],
    ["clone", "s/1", "--pre", "P"],
    ["clone", "s/1", "--prefix"],
    ["clone", "s/1", "--prefix", "-P"],
    ["clone", "s/1", "--prefix", "P", "-j3"],
    ["clone", "s/1", "--prefix", "P", "--force=1"],
    ["clone", "s/1", "--prefix", "P", "--prefix", "Q"],
    ["clone", "-h"],
    ["clone", "--", "s/1", "--prefix", "P"],
    ["clone", "", "--prefix", ""],
]
PACK = [
    ["pack", "s/1", "-o", "X.tar.zst"],
    ["pack", "s/1", "--output=X", "--level", "19", "--json"],
    ["--root=/r", "pack", "--publish", "s/1", "--format", "squashfs"],
    ["pack", "s/1", "-o", "X", "--layer", "L", "--root", "/q", "--format=tar.zst"],
    ["pack", "s/1", "-o", "X", "--publish"],
    ["pack", "s/1"],
    ["pack", "-o", "X"],
    ["pack", "s/1", "-o", "X", "--format", "zip"],
    ["pack", "s/1", "-o", "X", "--level", "fast"],
    ["pack", "s/1", "-o", "X", "--level=-1"],
    ["pack", "s/1", "-o", "X", "--level", "-1"],
    ["pack", "s/1", "-oX"],
    ["pack", "s/1", "-o=X"],
    ["pack", "s/1", "-o", "X", "-o", "Y"],
    ["pack", "s/1", "-o", ""],
    ["pack", "s/1", "--out", "X"],
    ["pack", "s/1", "t/2", "-o", "X"],
    ["pack", "s/1", "--publish", "--publish"],
]


def _slow(command: str, argv: list[str]) -> dict[str, object] | None:
    try:
        return vars(parser(command).parse_args(argv))
    except SystemExit:
        return None


@pytest.mark.parametrize("argv", CLONE + PACK, ids=" ".join)
def test_quick_args_match_argparse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    only = _command_module(argv)
    assert only in ("clone", "pack")
    quick = _quick_args(only, argv)
    slow = _slow(only, argv)
    capsys.readouterr()
    if quick is not None:
        assert slow is not None and vars(quick) == slow


USUAL = [
    ["clone", "s/1", "--prefix", "P"],
    ["--root", "/r", "clone", "s/1", "--prefix", "P", "--mode", "hardlink", "-j", "2", "--json"],
    ["clone", "--prefix=P", "--force"],
    ["pack", "s/1", "-o", "X.tar.zst"],
    ["--root", "/r", "pack", "s/1", "-o", "X.tar.zst", "--level", "3"],
    ["pack", "s/1", "--publish", "--format", "squashfs", "--json"],
]


@pytest.mark.parametrize("argv", USUAL, ids=" ".join)
def test_the_usual_lines_need_no_argparse(argv: list[str]) -> None:
    only = _command_module(argv)
    assert only is not None and _quick_args(only, argv) is not None


@pytest.mark.parametrize("argv", [["clone", "s/1", "--prefix", "P", "--mode", "fast"],
                                  ["pack", "s/1", "-o", "X", "--publish"],
                                  ["pack", "s/1", "-o", "X", "--level", "fast"]], ids=" ".join)
def test_what_argparse_rejects_is_left_to_it(argv: list[str]) -> None:
    only = _command_module(argv)
    assert only is not None and _quick_args(only, argv) is None and _slow(only, argv) is None
