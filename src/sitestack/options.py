"""Each command's options, declared once: `COMMAND = Command(...)` in its module.

The one declaration builds the command's argparse parser (its help, its errors, every unusual
line) and, for a command declared `quick=True`, drives `Command.parse`: a plain walk of the
usual lines that gives the namespace argparse would give, without argparse. Importing and
building argparse costs a command ~15 ms of start-up here (with gettext, locale and shutil),
a third of `sitestack venv`'s run and a tenth of a small clone's (bench/venv.py,
bench/realstack.py).

The walk answers None wherever it is not sure to agree with argparse, and the CLI then asks
argparse, which also words every error: `-h`, an abbreviation, `--`, a short option glued to
its value, any word or value starting with '-', an option kind it does not model (append, an
optional value), a missing, extra, unconvertible or out-of-choices value, a required option
or group left out. tests/unit/test_options.py compares the two on lines generated from every
command's declaration.
"""

from __future__ import annotations

from types import SimpleNamespace

from sitestack import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any


class Option:
    """One argument, in argparse's words: `Option(*flags, **kw)` is `add_argument(*flags, **kw)`.
    A first flag without a leading '-' makes a positional. Keywords left out are not passed."""

    __slots__ = ("flags", "dest", "kwargs", "positional", "kind", "default", "type", "choices",
                 "nargs", "required", "action")

    def __init__(self, *flags: str, dest: str | None = None, action: str | None = None,
                 type: Callable[[str], Any] | None = None, choices: Sequence[Any] | None = None,
                 default: Any = None, nargs: str | None = None, const: Any = None,
                 required: bool = False, metavar: str | None = None, help: str | None = None) -> None:
        self.flags = flags
        self.positional = not flags[0].startswith("-")
        given = {"dest": dest, "action": action, "type": type, "choices": choices, "default": default,
                 "nargs": nargs, "const": const, "metavar": metavar, "help": help}
        self.kwargs: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if required:
            self.kwargs["required"] = True
        # argparse's dest: given, else a positional's name, else the first long flag's words
        longs = [f for f in flags if f.startswith("--")]
        self.dest = dest or (flags[0] if self.positional else (longs or flags)[0].lstrip("-").replace("-", "_"))
        # what the walk models: a store_true flag, or one value (positional or option)
        plain = const is None and nargs in (None, "?" if self.positional else None)
        self.kind = ("flag" if action == "store_true" and plain else
                     "value" if action is None and plain else "other")
        # argparse's default: store_true's False, store_false's True, else the one given
        self.default = ({"store_true": False, "store_false": True}.get(action or "", default)
                        if default is None else default)
        self.type, self.choices, self.nargs, self.required, self.action = type, choices, nargs, required, action

    def add_to(self, parser: Any) -> None:
        """Add it to an argparse parser or group."""
        parser.add_argument(*self.flags, **self.kwargs)


class OneOf:
    """Options of which at most one may be given (argparse's mutually exclusive group);
    `required=True`: exactly one."""

    __slots__ = ("options", "required")

    def __init__(self, *options: Option, required: bool = False) -> None:
        self.options, self.required = options, required


class Command:
    """A command's help and options. `quick=True` (for commands whose start-up is benchmarked):
    the CLI parses their plain lines with `parse`, without importing argparse. `words=HELP`: the
    command reads a command line of another program's grammar (`sitestack conda`: conda's,
    which argparse cannot take: `conda --version`, `conda -h`); every word after its name is
    handed over as `words`, without argparse (quick), and the command parses them itself."""

    __slots__ = ("help", "options", "description", "quick", "passthrough")

    def __init__(self, help: str, options: Sequence[Option | OneOf] = (), *,
                 description: str | None = None, quick: bool = False, words: str | None = None) -> None:
        self.passthrough = words is not None
        if words is not None:  # argparse's REMAINDER ("..."), for `sitestack --help` and the like
            options, quick = (Option("words", nargs="...", metavar="WORDS", help=words),), True
        self.help, self.options, self.description, self.quick = help, tuple(options), description, quick
        if quick and not self.walkable():
            raise ValueError(f"{help!r}: quick, but its positionals are more than `parse` models")

    def flat(self) -> list[Option]:
        """Every option, those of a OneOf included, in declaration order."""
        return [o for item in self.options
                for o in (item.options if isinstance(item, OneOf) else (item,))]

    def walkable(self) -> bool:
        """Whether `parse` can answer at all: it models one optional positional, or any number of
        required ones (several with an optional one argparse matches in chunks, not in order),
        and no help or version action (argparse sets no default for those)."""
        if self.passthrough:
            return True
        opts = self.flat()
        pos = [o for o in opts if o.positional]
        return (all(o.kind == "value" for o in pos) and (len(pos) < 2 or not any(o.nargs for o in pos))
                and not any(o.action in ("help", "version") for o in opts))

    def add_parser(self, sub: Any, name: str) -> argparse.ArgumentParser:
        """The command's parser, added to argparse's subparsers `sub` under `name`."""
        kw = {"description": self.description} if self.description else {}
        p: argparse.ArgumentParser = sub.add_parser(name, help=self.help, **kw)
        for item in self.options:
            if isinstance(item, OneOf):
                group = p.add_mutually_exclusive_group(required=item.required)
                for o in item.options:
                    o.add_to(group)
            else:
                item.add_to(p)
        return p

    def parse(self, argv: Sequence[str], preset: Mapping[str, Any],
              extra: Sequence[Option] = ()) -> SimpleNamespace | None:
        """The namespace argparse makes of `argv` (the words after the command's name), or None
        where this walk is not sure to agree. `preset`: values argparse would hold already
        (the global options', `set_defaults`); `extra`: options the CLI adds to every command."""
        if not self.walkable():
            return None
        if self.passthrough:
            return SimpleNamespace(**preset, words=list(argv))
        opts = self.flat() + list(extra)
        positionals = [o for o in opts if o.positional]
        by_flag = {f: o for o in opts if not o.positional for f in o.flags}
        ns: dict[str, Any] = {o.dest: o.default for o in opts}
        ns.update(preset)
        seen: set[Option] = set()
        changed: set[Option] = set()  # given a value other than its default (argparse's "is not")
        n_pos = 0
        i = 0
        while i < len(argv):
            arg = argv[i]
            o = by_flag.get(arg)
            if o is None and arg.startswith("--") and "=" in arg:
                o = by_flag.get(arg.partition("=")[0])
                word: str | None = arg.partition("=")[2]
                if o is None or o.kind != "value" or word == "--":  # argparse drops a '--' value
                    return None
            elif o is not None:
                if o.kind == "value":
                    # argparse takes a next word starting with '-' for an option (or a negative number)
                    if i + 1 == len(argv) or argv[i + 1].startswith("-"):
                        return None
                    i += 1
                    word = argv[i]
                elif o.kind == "flag":
                    word = None
                else:
                    return None
            elif arg.startswith("-") or n_pos == len(positionals):
                return None
            else:
                o, word = positionals[n_pos], arg
                n_pos += 1
            value: Any = True
            if word is not None:
                try:
                    value = o.type(word) if o.type else word
                except Exception:  # noqa: BLE001  # argparse's error to word (ValueError, TypeError, ...)
                    return None
                if o.choices is not None and value not in o.choices:
                    return None
            ns[o.dest] = value
            seen.add(o)
            if value is not o.default:
                changed.add(o)
            i += 1
        for o in positionals[n_pos:]:
            if o.nargs is None or o.choices is not None:  # argparse checks a missing '?' one's default too
                return None
        if any(o.required and o not in seen for o in opts):
            return None
        for item in self.options:
            if isinstance(item, OneOf):
                if len(seen.intersection(item.options)) > 1:
                    return None
                if item.required and not changed.intersection(item.options):
                    return None
        for o in opts:  # argparse converts a string default that was left as it is
            if o.type and o not in seen and isinstance(o.default, str) and ns[o.dest] is o.default:
                try:
                    ns[o.dest] = o.type(o.default)
                except Exception:  # noqa: BLE001
                    return None
        return SimpleNamespace(**ns)
