"""sitestack/options.py: each command's one declaration builds its argparse parser and drives the
plain walk of its usual lines (`Command.parse`), and the two agree.

Lines are generated from every command's own declaration (plain ones, and the unusual: `-h`,
abbreviations, `--`, glued short options, values starting with '-', bad numbers and choices,
missing and extra words), then parsed both ways: wherever the walk answers, argparse accepts
the line and makes the same namespace. For the quick commands the walk must also answer every
plain line argparse accepts (else start-up quietly pays for argparse again).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pkgutil
import random
from typing import Any

import pytest

from sitestack import commands
from sitestack.cli import ROOT, _command, _command_module, _quick_args, parser
from sitestack.options import Command, OneOf, Option

# A command that reads another program's command line (`conda`: Command(words=...)) takes every
# word as it is; test_a_command_of_words_takes_every_word says so, the rest compare with argparse.
NAMES = sorted(m.name for m in pkgutil.iter_modules(commands.__path__)
               if not _command(m.name).COMMAND.passthrough)
QUICK = [n for n in NAMES if _command(n).COMMAND.quick]


def _argparse(argv: list[str]) -> dict[str, Any] | None:
    """argparse's namespace for `sitestack ARGV`, built for that command only, or None."""
    only = _command_module(argv)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(parser(only).parse_args(argv))
        except SystemExit:
            return None


def _walk(name: str, argv: list[str]) -> dict[str, Any] | None:
    """The walk's namespace for `sitestack ARGV`, whether or not the command is declared quick."""
    if _command(name).COMMAND.quick:
        ns = _quick_args(name, argv)
        return None if ns is None else vars(ns)
    # the same call the CLI makes for a quick command, after its own `--root` words
    i = argv.index(name)
    root = None
    if i == 2:
        root = argv[1]
    elif i == 1:
        root = argv[0].partition("=")[2]
    mod = _command(name)
    ns = mod.COMMAND.parse(argv[i + 1:], {"root": root, "command": name, "func": mod.run}, extra=(ROOT,))
    return None if ns is None else vars(ns)


PLAIN_WORDS = ["v", "", "a b", "x=y", "/p/q", "s/1"]
ODD_WORDS = ["-v", "--", "-1", "-", "-a b"]
INTS = ["3", "08", "0", "x", "", "1_0", " 7"]


def _values(o: Option, plain: bool) -> list[str]:
    if o.choices is not None:
        return [*map(str, o.choices), "zz"] + ([] if plain else ["-x"])
    if o.type is int:
        return INTS + ([] if plain else ["-2"])
    return PLAIN_WORDS + ([] if plain else ODD_WORDS)


def _fragments(o: Option, plain: bool) -> list[list[str]]:
    """Ways to write option `o` on a line."""
    longs = [f for f in o.flags if f.startswith("--")]
    shorts = [f for f in o.flags if not f.startswith("--")]
    out: list[list[str]] = []
    if o.kind == "flag":
        out += [[f] for f in o.flags]
        if not plain:
            out += [[f + "=1"] for f in longs] + [[f[:-1]] for f in longs if len(f) > 4]
        return out
    if o.kind == "other" and plain:
        return []
    for v in _values(o, plain):
        out += [[f, v] for f in o.flags] + [[f"{f}={v}"] for f in longs]
        if not plain:
            out += [[f + v] for f in shorts] + [[f"{f[:-1]}={v}"] for f in longs if len(f) > 4]
    if not plain:
        out += [[f] for f in o.flags] + [[f, "-x"] for f in o.flags]
    return out


def lines(name: str, n: int, *, plain: bool, seed: int = 27) -> list[list[str]]:
    """`n` command lines for command `name`, from its declaration alone."""
    rng = random.Random(f"{seed}-{name}-{plain}")
    cmd: Command = _command(name).COMMAND
    opts = cmd.flat()
    frags = [f for o in [*opts, ROOT] if not o.positional for f in _fragments(o, plain)]
    if not plain:
        frags += [["--"], ["-h"], ["--help"], ["-x"], ["--nope"], ["--root"]]
    pos_words = ["P", "", "s/1", "a b"] + ([] if plain else ["-", "-x y", "--", "-1"])
    n_pos = sum(o.positional for o in opts)
    out = []
    for _ in range(n):
        words = [w for f in rng.sample(frags, min(len(frags), rng.randint(0, 5))) for w in f]
        for _ in range(rng.choice([n_pos, n_pos, n_pos, max(0, n_pos - 1), n_pos + 1])):
            words.insert(rng.randint(0, len(words)), rng.choice(pos_words))
        out.append(rng.choice([[], ["--root", "/g"], ["--root=/g"]]) + [name] + words)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_the_walk_never_disagrees_with_argparse(name: str) -> None:
    """Every command (quick or not): where the walk answers, argparse says the same."""
    wrong = []
    answered = 0
    for argv in lines(name, 250 if name in QUICK else 120, plain=False) + lines(name, 60, plain=True):
        quick = _walk(name, argv)
        if quick is not None:
            answered += 1
            slow = _argparse(argv)
            if quick != slow:
                wrong.append((argv, quick, slow))
    assert wrong == []
    assert answered if _command(name).COMMAND.walkable() else not answered


@pytest.mark.parametrize("name", QUICK)
def test_a_quick_command_walks_every_plain_line_argparse_takes(name: str) -> None:
    missed = []
    for argv in lines(name, 400, plain=True):
        slow = _argparse(argv)
        quick = _walk(name, argv)
        if (quick is None) != (slow is None) or quick != slow:
            missed.append((argv, quick, slow))
    assert missed == []


VENV = [
    ["venv", "L"],
    ["venv", "L", "--stack", "s/1"],
    ["--root", "/r", "venv", "--stack=s/1", "L", "--json"],
    ["--root=/r", "venv", "L", "--root", "/q", "--no-inherit", "--user-site", "--prompt", "p q"],
    ["venv", "--prompt=", "L", "--stack", "", "--prompt", "x=y"],
    ["venv", "L", "--stack", "a", "--stack", "b"],
    ["--root", "/r", "--root", "/s", "venv", "L"],
    ["venv", "-my layer"],
    ["venv", "L", "--"],
    ["venv", "--", "L"],
    ["venv", "L", "M"],
    ["venv"],
    ["venv", "L", "--st", "s/1"],
    ["venv", "L", "--stack"],
    ["venv", "L", "--stack", "-1"],
    ["venv", "L", "--json=1"],
    ["venv", "-h"],
    ["venv", "L", "-"],
    ["--root", "-x", "venv", "L"],
]
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
    ["clone", "s/1", "--prefix", "P", "--mode", "fast", "--mode", "auto"],
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


@pytest.mark.parametrize("argv", VENV + CLONE + PACK, ids=" ".join)
def test_the_lines_earlier_sessions_picked(argv: list[str]) -> None:
    only = _command_module(argv)
    quick = _quick_args(only, argv) if only else None
    if quick is not None:
        assert vars(quick) == _argparse(argv)


USUAL = [
    ["venv", "L"],
    ["--root", "/r", "venv", "--stack", "s/1", "L", "--json"],
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
                                  ["pack", "s/1", "-o", "X", "--level", "fast"],
                                  ["venv", "L", "-h"]], ids=" ".join)
def test_what_argparse_rejects_is_left_to_it(argv: list[str]) -> None:
    only = _command_module(argv)
    assert only is not None and _quick_args(only, argv) is None and _argparse(argv) is None


def _subparser(name: str) -> argparse.ArgumentParser:
    top = parser(name)
    sub = next(a for a in top._actions if a.dest == "command")
    sp: argparse.ArgumentParser = sub.choices[name]  # type: ignore[index]
    return sp


@pytest.mark.parametrize("name", NAMES)
def test_argparse_is_built_from_the_declaration(name: str) -> None:
    """Every command, with a fast path or none: each declared option is one argparse action
    with what the declaration says, and the parser has nothing else (but -h and the CLI's
    --root)."""
    mod = _command(name)
    cmd = mod.COMMAND
    assert isinstance(cmd, Command) and callable(mod.run)
    sp = _subparser(name)
    actions = {a.dest: a for a in sp._actions if a.dest not in ("help", "root")}
    declared = cmd.flat()
    assert sorted(actions) == sorted(o.dest for o in declared)
    for o in declared:
        a = actions[o.dest]
        assert a.option_strings == ([] if o.positional else list(o.flags))
        for key, value in o.kwargs.items():
            if key not in ("action", "dest"):
                assert getattr(a, key) == value, (o.dest, key)
        assert a.default == o.default
    groups = [item for item in cmd.options if isinstance(item, OneOf)]
    assert [(g.required, [actions[o.dest] for o in g.options]) for g in groups] == \
        [(g.required, g._group_actions) for g in sp._mutually_exclusive_groups]
    assert sp.description == cmd.description
    assert _argparse([name, "-h"]) is None  # help printed: argparse is the one that answered


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(QUICK)))
def test_a_command_without_a_fast_path_goes_to_argparse(name: str) -> None:
    for argv in lines(name, 20, plain=True):
        assert _quick_args(name, argv) is None


def test_no_command_keeps_a_second_table() -> None:
    for name in NAMES:
        mod = _command(name)
        assert not {"register", "FLAGS", "VALUES", "quick_args"} & set(vars(mod)), name


def test_the_walk_declines_what_it_does_not_model() -> None:
    cmd = Command("t", options=(Option("a", nargs="?"), Option("b", nargs="?"), Option("--x", action="store_true")))
    assert cmd.parse(["1"], {}) is None  # two optional positionals: argparse matches them in chunks
    with pytest.raises(ValueError, match="quick"):
        Command("t", options=(Option("a", nargs="*"),), quick=True)
    cmd = Command("t", options=(Option("--add", action="append", default=[]), Option("--y")))
    assert vars(cmd.parse(["--y", "1"], {}) or argparse.Namespace()) == {"add": [], "y": "1"}
    assert cmd.parse(["--add", "1"], {}) is None
    cmd = Command("t", options=(Option("p", nargs="?", choices=["a"]),))
    assert cmd.parse([], {}) is None  # argparse checks a missing optional positional's default against its choices
    cmd = Command("t", options=(Option("--off", action="store_false", dest="on"), Option("--y")))
    assert vars(cmd.parse(["--y", "1"], {}) or argparse.Namespace()) == {"on": True, "y": "1"}
    assert cmd.parse(["--off"], {}) is None
    assert Command("t", options=(Option("--v", action="version"),)).walkable() is False


def test_a_command_of_words_takes_every_word() -> None:
    """`sitestack conda ...` (what the site's `conda` runs): every word after the name, options of
    conda's own included, goes to the command untouched, without argparse."""
    for words in (["--version"], ["-h"], ["create", "--clone", "base", "-p", "/x y"], [],
                  ["run", "-n", "e", "python", "-c", "1", "--root", "/r"], ["--root", "x"]):
        ns = _quick_args("conda", ["conda", *words])
        assert ns is not None and vars(ns)["words"] == words and vars(ns)["root"] is None
    ns = _quick_args("conda", ["--root", "/g", "conda", "list"])
    assert ns is not None and vars(ns)["root"] == "/g" and vars(ns)["words"] == ["list"]
    cmd = Command("t", words="w")
    assert cmd.passthrough and cmd.quick and [o.dest for o in cmd.flat()] == ["words"]
