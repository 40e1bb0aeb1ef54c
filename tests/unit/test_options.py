"""sitestack/options.py: each command's one declaration builds its argparse parser and drives the
plain walk of its usual lines (`Command.parse`), and the two agree.

Lines are generated from every command's own declaration, its subcommands' too (plain ones,
and the unusual: `-h`, abbreviations, `--`, glued short options, values starting with '-', bad
numbers and choices, missing and extra words, unknown and missing subcommands), then parsed
both ways: wherever the walk answers, argparse accepts the line and makes the same namespace.
For the quick commands the walk must also answer every plain line argparse accepts (else
start-up quietly pays for argparse again). Another program's line (`conda`) is the walk's
alone: where it does not answer it refuses, in one line.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import pkgutil
import random
import re
from pathlib import Path
from typing import Any

import pytest

from sitestack import commands
from sitestack.cli import ROOT, _command, _command_module, _extra, _quick_args, parser
from sitestack.errors import UsageError
from sitestack.options import REST, SUBCOMMAND, Command, OneOf, Option, Sub

NAMES = sorted(m.name for m in pkgutil.iter_modules(commands.__path__))
QUICK = [n for n in NAMES if _command(n).COMMAND.quick]
WITH_SUBCOMMANDS = [n for n in NAMES if _command(n).COMMAND.subcommands]


def _argparse(argv: list[str]) -> dict[str, Any] | None:
    """argparse's namespace for `sitestack ARGV`, built for that command only, or None."""
    only = _command_module(argv)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(parser(only).parse_args(argv))
        except SystemExit:
            return None


def _walk(name: str, argv: list[str]) -> dict[str, Any] | None:
    """The walk's namespace for `sitestack ARGV`, whether or not the command is declared quick;
    None where it declines (another program's line: refuses)."""
    try:
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
        ns = mod.COMMAND.parse(argv[i + 1:], {"root": root, "command": name, "func": mod.run}, extra=_extra(mod))
        return None if ns is None else vars(ns)
    except UsageError as e:
        assert _command(name).COMMAND.program and "\n" not in str(e)  # refused: one line
        return None


def _places(level: Command | Sub, typed: tuple[str, ...] = (), canonical: tuple[str, ...] = (),
            above: tuple[Option, ...] = ()) -> list[tuple[list[str], str, list[Option], Command | Sub]]:
    """Every way to name each subcommand that has none of its own (the command itself if it has
    none): (the words typed, its canonical words, the options it takes there, it)."""
    if not level.subcommands:
        return [(list(typed), " ".join(canonical), [*above, *level.flat()], level)]
    return [p for word, sub in level.table.items()
            for p in _places(sub, (*typed, word), (*canonical, sub.key), (*above, *level.flat()))]


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
    """`n` command lines for command `name`, from its declaration alone: options of the levels
    above a subcommand before or after its words, its own after them."""
    rng = random.Random(f"{seed}-{name}-{plain}")
    cmd: Command = _command(name).COMMAND
    extra = [] if cmd.program else [ROOT]
    places = _places(cmd)
    odd = [] if plain else [["--"], ["-h"], ["--help"], ["-x"], ["--nope"], ["--root"]]
    pos_words = ["P", "", "s/1", "a b", "-"] + ([] if plain else ["-x y", "--", "-1", "zz"])
    top = [(o, f) for o in [*cmd.flat(), *extra] if not o.positional for f in _fragments(o, plain)]
    out = []
    for _ in range(n):
        typed, _canonical, opts, leaf = rng.choice(places)
        frags = [(o, f) for o in [*opts, *extra] if not o.positional for f in _fragments(o, plain)]
        picked = rng.sample(frags, min(len(frags), rng.randint(0, 5))) + [(None, f) for f in odd if rng.random() < 0.05]
        before = rng.sample(top, min(len(top), rng.choice([0, 0, 1, 2]))) if typed else []
        if plain and cmd.program:  # a program's line takes a value once (the walk refuses a second -p)
            picked = [(o, f) for k, (o, f) in enumerate(picked)
                      if o is None or o.kind != "value" or o not in [p for p, _ in picked[:k] + before]]
        words = [w for _, f in picked for w in f]
        positionals = [o for o in leaf.flat() if o.positional]
        n_pos = sum(rng.randint(0, 3) if o.nargs in ("*", REST) else 1 for o in positionals)
        for _ in range(rng.choice([n_pos, n_pos, n_pos, max(0, n_pos - 1), n_pos + 1])):
            words.insert(rng.randint(0, len(words)), rng.choice(pos_words))
        path = list(typed)
        if not plain and path and rng.random() < 0.2:  # a subcommand left out, or one it does not have
            path = path[:-1] if rng.random() < 0.5 else [*path[:-1], rng.choice(["zz", "-", "", "env", "init"])]
        out.append(rng.choice([[], ["--root", "/g"], ["--root=/g"]]) + [name]
                   + [w for _, f in before for w in f] + path + words)
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


def _subparser(*words: str) -> argparse.ArgumentParser:
    """The parser of `sitestack WORDS` (a command, then its subcommand's words)."""
    sp = parser(words[0])
    for word in words:
        sub = next(a for a in sp._actions if isinstance(a, argparse._SubParsersAction))
        sp = sub.choices[word]  # type: ignore[index]
    return sp


def _same(sp: argparse.ArgumentParser, level: Command | Sub, above: list[Option], *, root: bool) -> None:
    """The parser has one action for each option of the level's, with what the declaration
    says, one for each option of the levels above (SUPPRESS: the value given there stands),
    and nothing else but -h, the subcommands and the CLI's hidden --root."""
    actions = {a.dest: a for a in sp._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.dest != "root"}
    assert ("root" in {a.dest for a in sp._actions}) == root
    assert sorted(actions) == sorted(o.dest for o in [*above, *level.flat()])
    for o in [*above, *level.flat()]:
        a = actions[o.dest]
        assert a.option_strings == ([] if o.positional else list(o.flags))
        for key, value in o.kwargs.items():
            if key not in ("action", "dest", "default"):
                assert getattr(a, key) == value, (o.dest, key)
        assert a.default == (argparse.SUPPRESS if o in above else o.default)
    groups = [item for item in level.options if isinstance(item, OneOf)]
    assert [(g.required, [actions[o.dest] for o in g.options]) for g in groups] == \
        [(g.required, g._group_actions) for g in sp._mutually_exclusive_groups]
    assert sp.description == level.description


@pytest.mark.parametrize("name", NAMES)
def test_argparse_is_built_from_the_declaration(name: str) -> None:
    """Every command, with a fast path or none, and every subcommand where it can be named:
    each declared option is one argparse action with what the declaration says."""
    mod = _command(name)
    cmd = mod.COMMAND
    assert isinstance(cmd, Command) and callable(mod.run)
    _same(_subparser(name), cmd, [], root=not cmd.program)
    if cmd.subcommands:
        for typed, canonical, opts, leaf in _places(cmd):
            sp = _subparser(name, *typed)
            _same(sp, leaf, opts[:len(opts) - len(leaf.flat())], root=not cmd.program)
            assert sp.get_default(SUBCOMMAND) == canonical
            assert sp.get_default("func") is None  # set once, on the command's parser
    if not cmd.program:
        assert _argparse([name, "-h"]) is None  # help printed: argparse is the one that answered


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(QUICK)))
def test_a_command_without_a_fast_path_goes_to_argparse(name: str) -> None:
    for argv in lines(name, 20, plain=True):
        assert _quick_args(name, argv) is None


FLAG = re.compile(r"^-{1,2}[A-Za-z][\w-]*$")


def test_no_command_keeps_a_second_table() -> None:
    """No `register()`, no FLAGS/VALUES tables, and no option named anywhere in a command's
    module but in its declaration: a flag written outside an `Option(...)` (a GRAMMAR of
    conda's, a check of which options fit which action, an `arg in ("-h", "--help")`) is a
    second parser."""
    for name in NAMES:
        mod = _command(name)
        assert not {"register", "FLAGS", "VALUES", "quick_args", "GRAMMAR"} & set(vars(mod)), name
        tree = ast.parse(Path(str(mod.__file__)).read_text())
        declared = {id(a) for node in ast.walk(tree) if isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name) and node.func.id == "Option" for a in node.args}
        loose = [(node.lineno, node.value) for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str) and FLAG.match(node.value)
                 and id(node) not in declared]
        assert loose == [], name


def test_the_rule_sees_a_grammar_table(tmp_path: Path) -> None:
    """The check above, on the kind of table it is there to catch."""
    src = 'GRAMMAR = {"create": ({"-y": "yes"}, {"--prefix": "prefix"})}\nCOMMAND = Command("x", options=(Option("--json"),))\n'
    tree = ast.parse(src)
    declared = {id(a) for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Option"
                for a in node.args}
    assert [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and FLAG.match(n.value) and id(n) not in declared] == ["-y", "--prefix"]


def test_the_walk_declines_what_it_does_not_model() -> None:
    cmd = Command("t", options=(Option("a", nargs="?"), Option("b", nargs="?"), Option("--x", action="store_true")))
    assert cmd.parse(["1"], {}) is None  # two optional positionals: argparse matches them in chunks
    with pytest.raises(ValueError, match="quick"):
        Command("t", options=(Option("a", nargs="*"), Option("b")), quick=True)
    cmd = Command("t", options=(Option("--add", action="append", default=[]), Option("--y")))
    assert vars(cmd.parse(["--y", "1"], {}) or argparse.Namespace()) == {"add": [], "y": "1"}
    assert vars(cmd.parse(["--add", "1", "--add=2"], {}) or argparse.Namespace()) == {"add": ["1", "2"], "y": None}
    cmd = Command("t", options=(Option("p", nargs="?", choices=["a"]),))
    assert cmd.parse([], {}) is None  # argparse checks a missing optional positional's default against its choices
    cmd = Command("t", options=(Option("--off", action="store_false", dest="on"), Option("--y")))
    assert vars(cmd.parse(["--y", "1"], {}) or argparse.Namespace()) == {"on": True, "y": "1"}
    assert cmd.parse(["--off"], {}) is None
    assert Command("t", options=(Option("--v", action="version"),)).walkable() is False
    cmd = Command("t", options=(Option("p", nargs="*"), Option("-y", action="store_true")))
    assert vars(cmd.parse(["a", "b", "-y"], {}) or argparse.Namespace()) == {"p": ["a", "b"], "y": True}
    assert cmd.parse(["a", "-y", "b"], {}) is None  # argparse takes one run of them: b is an extra word


def test_declarations_argparse_could_not_build_are_refused() -> None:
    with pytest.raises(ValueError, match="only options that may follow"):
        Command("t", options=(Option("p"),), subcommands=(Sub("a", "a"),))
    with pytest.raises(ValueError, match="twice"):
        Command("t", options=(Option("--json", action="store_true"),),
                subcommands=(Sub("a", "a", options=(Option("--json", action="store_true"),)),))
    with pytest.raises(ValueError, match="two subcommands"):
        Command("t", subcommands=(Sub("a", "a"), Sub("b", "b", aliases=("a",))))
    with pytest.raises(ValueError, match="only options the walk models"):
        Command("t", program="t", options=(Option("--m", nargs="?", const=""),))


def test_subcommands_two_words_aliases_and_a_remainder() -> None:
    """The walk of a made-up declaration, against argparse built from it, line by line."""
    one = Sub("one", "one", options=(Option("-y", action="store_true"),))
    cmd = Command("t", options=(Option("-v", action="store_true"),), subcommands=(
        one, Sub("rm", "rm", aliases=("del",), options=(Option("names", nargs="*"),)),
        Sub("env", "env", subcommands=(Sub("env ls", "ls", options=(Option("--json", action="store_true"),)),)),
        Sub("run", "run", options=(Option("-n"), Option("cmd", nargs=REST))),
        Sub("sh", "sh", subcommands=(one,)),
    ))
    top = argparse.ArgumentParser(prog="x")
    cmd.add_parser(top.add_subparsers(dest="command"), "t")
    for argv in (["one", "-y"], ["-v", "one"], ["one", "-v"], ["del", "a", "b"], ["rm"], ["env", "ls", "--json"],
                 ["env"], ["env", "rm"], ["run", "-n", "e", "x", "-n", "y"], ["run", "--", "-n"], ["run"],
                 ["sh", "one", "-y", "-v"], ["zz"], ["one", "x"], []):
        walked = cmd.parse(argv, {"command": "t"})
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                slow: dict[str, Any] | None = vars(top.parse_args(["t", *argv]))
            except SystemExit:
                slow = None
        assert (None if walked is None else vars(walked)) == slow, argv
    assert vars(cmd.parse(["sh", "one"], {}) or argparse.Namespace())[SUBCOMMAND] == "sh one"
    assert vars(cmd.parse(["del"], {}) or argparse.Namespace())[SUBCOMMAND] == "rm"
    assert vars(cmd.parse(["run", "--", "-n"], {}) or argparse.Namespace())["cmd"] == ["-n"]


def test_another_programs_line_is_the_walks_alone() -> None:
    """`sitestack conda ...` (what the site's `conda` runs): answered or refused by the walk,
    in conda's words, one line; never handed to argparse; --root only before `conda`."""
    for words in (["--version"], ["-h"], ["create", "--clone", "base", "-p", "/x y"], [],
                  ["run", "-n", "e", "python", "-c", "1", "--root", "/r"], ["shell.bash", "activate", "x"]):
        ns = _quick_args("conda", ["conda", *words])
        assert ns is not None and vars(ns)["root"] is None
    ns = _quick_args("conda", ["--root", "/g", "conda", "list"])
    assert ns is not None and vars(ns)["root"] == "/g" and vars(ns)[SUBCOMMAND] == "list"
    for words, says in ((["list", "--root", "x"], "conda list: unknown option --root"),
                        (["install", "-h2"], "conda install: unknown option -h2 (conda --help)"),
                        (["activate", "a", "b"], "conda activate: unexpected argument 'b'")):
        with pytest.raises(UsageError) as e:
            _quick_args("conda", ["conda", *words])
        assert str(e.value).startswith(says)
