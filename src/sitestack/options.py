"""Each command's options, declared once: `COMMAND = Command(...)` in its module.

The one declaration builds the command's argparse parser (its help, its errors, every unusual
line) and, for a command declared `quick=True`, drives `Command.parse`: a plain walk of the
usual lines that gives the namespace argparse would give, without argparse. Importing and
building argparse costs a command ~15 ms of start-up here (with gettext, locale and shutil),
a third of `sitestack venv`'s run and a tenth of a small clone's (bench/venv.py,
bench/realstack.py).

Subcommands (`sitestack kernel add`, `conda env list`) are `Sub`s, each with its own options
(argparse: a subparser each). A level's own options may be given again after its
subcommand's name (argparse: added there with a SUPPRESS default, as the CLI's --root), so a
level with subcommands has only plain options: no positional, no required option, no OneOf.
The subcommand given, in its canonical words, is `args.subcommand` ("add", "env list",
"shell.bash activate").

The walk answers None wherever it is not sure to agree with argparse, and the CLI then asks
argparse, which also words every error: `-h`, an abbreviation, `--`, a short option glued to
its value, any word or value starting with '-' (but '-' itself), an option kind it does not
model (an optional value, a const), a missing, extra, unconvertible or out-of-choices value,
an unknown subcommand, a required option or group left out.

`Command(program="conda")`: the command line of another program (the site's `conda` runs
`sitestack conda`). argparse never parses it: its errors come with a usage block, and a
shell's every `conda activate` starts one. The walk parses every line, and what it would
decline is one error of that program's (`conda install: unknown option --bogus`), worded
here; what argparse would take but the walk does not (a glued `-pX`, `--`, a second `-p`)
is an error too. argparse is still built from the declaration: `sitestack --help` lists the
command, and tests/unit/test_options.py compares the two on lines generated from every
command's declaration.
"""

from __future__ import annotations

from types import SimpleNamespace

from sitestack import TYPE_CHECKING
from sitestack.errors import UsageError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

SUBCOMMAND = "subcommand"  # the namespace's name for the subcommand given
REST = "..."  # argparse.REMAINDER: a positional taking every word from its first one on (`conda run CMD ...`)


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
        # what the walk models: a store_true flag, one value (appended, for append), a positional
        # of one, an optional one or a list of words, a remainder
        plain = const is None and nargs in ((None, "?", "*") if self.positional else (None,))
        self.kind = ("rest" if self.positional and nargs == REST and not (action or type or choices) else
                     "flag" if action == "store_true" and plain else
                     "value" if action is None and plain else
                     "append" if action == "append" and plain and not self.positional else "other")
        # argparse's default: store_true's False, store_false's True, else the one given
        self.default = ({"store_true": False, "store_false": True}.get(action or "", default)
                        if default is None else default)
        self.type, self.choices, self.nargs, self.required, self.action = type, choices, nargs, required, action

    def add_to(self, parser: Any, **override: Any) -> None:
        """Add it to an argparse parser or group (`override`: keywords of the CLI's, SUPPRESS)."""
        kw = {**self.kwargs, **override}
        if self.kind == "rest":
            kw["action"] = _rest_action()
        parser.add_argument(*self.flags, **kw)


class OneOf:
    """Options of which at most one may be given (argparse's mutually exclusive group);
    `required=True`: exactly one."""

    __slots__ = ("options", "required")

    def __init__(self, *options: Option, required: bool = False) -> None:
        self.options, self.required = options, required


class _Level:
    """A command or one of its subcommands: its help, options and subcommands."""

    __slots__ = ("help", "options", "subcommands", "description", "table", "bare")

    def __init__(self, help: str, options: Sequence[Option | OneOf], subcommands: Sequence[Sub],
                 description: str | None, bare: bool) -> None:
        self.help, self.options, self.subcommands = help, tuple(options), tuple(subcommands)
        self.description, self.bare = description, bare
        self.table: dict[str, Sub] = {}  # every word that names a subcommand here
        for s in self.subcommands:
            for word in (s.key, *s.aliases):
                if word in self.table:
                    raise ValueError(f"{help!r}: two subcommands called {word!r}")
                self.table[word] = s

    def flat(self) -> list[Option]:
        """Its own options, those of a OneOf included, in declaration order."""
        return [o for item in self.options
                for o in (item.options if isinstance(item, OneOf) else (item,))]

    def walkable(self) -> bool:
        """Whether `parse` can answer at all: it models at each level one optional, listed or
        remainder positional, or any number of required ones (several with an optional one
        argparse matches in chunks, not in order), and no help or version action (argparse
        sets no default for those)."""
        opts = self.flat()
        pos = [o for o in opts if o.positional]
        return (all(o.kind in ("value", "rest") for o in pos) and (len(pos) < 2 or not any(o.nargs for o in pos))
                and not any(o.action in ("help", "version") for o in opts)
                and all(s.walkable() for s in self.subcommands))

    def _check(self, above: Sequence[Option]) -> None:
        """The rules both builders rely on, for this level and every one below it."""
        mine = self.flat()
        dests = [o.dest for o in (*above, *mine)]
        flags = [f for o in (*above, *mine) if not o.positional for f in o.flags]
        if len(set(dests)) < len(dests) or len(set(flags)) < len(flags) or SUBCOMMAND in dests:
            raise ValueError(f"{self.help!r}: an option's name or flag twice, with those it takes from above")
        if self.subcommands and (any(o.positional or o.required for o in mine)
                                 or any(isinstance(i, OneOf) for i in self.options)):
            raise ValueError(f"{self.help!r}: with subcommands, only options that may follow them too")
        for s in self.subcommands:
            s._check((*above, *mine))

    def _parser(self, sub: Any, word: str, above: list[tuple[Option, dict[str, Any]]],
                path: tuple[str, ...], aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        import argparse

        kw: dict[str, Any] = {"description": self.description} if self.description else {}
        if aliases:
            kw["aliases"] = list(aliases)
        mine = self.flat()
        own_help = any(f in ("-h", "--help") for o in (*mine, *(o for o, _ in above)) for f in o.flags)
        p: argparse.ArgumentParser = sub.add_parser(word, help=self.help, add_help=not own_help, **kw)
        for o, override in above:
            o.add_to(p, **override)
        for item in self.options:
            if isinstance(item, OneOf):
                group = p.add_mutually_exclusive_group(required=item.required)
                for o in item.options:
                    o.add_to(group)
            else:
                item.add_to(p)
        if self.subcommands:
            inner = p.add_subparsers(dest=SUBCOMMAND, metavar="COMMAND", required=not self.bare)
            below = [*above, *((o, {"default": argparse.SUPPRESS}) for o in mine)]
            for s in self.subcommands:
                s._parser(inner, s.key, below, (*path, s.key), s.aliases)
        elif path:
            p.set_defaults(**{SUBCOMMAND: " ".join(path)})
        return p


class Sub(_Level):
    """A subcommand. `name`: how messages call it ("env list"); its last word is what is typed
    at its place (Sub("env list") among the subcommands of Sub("env")). `aliases`: other words
    for it there (`conda uninstall`). One Sub may sit in several places (`conda activate` and
    `conda shell.bash activate`): `args.subcommand` names the place, messages the Sub."""

    __slots__ = ("name", "aliases", "key")

    def __init__(self, name: str, help: str, options: Sequence[Option | OneOf] = (), *,
                 aliases: Sequence[str] = (), subcommands: Sequence[Sub] = (),
                 description: str | None = None) -> None:
        self.name, self.aliases, self.key = name, tuple(aliases), name.split()[-1]
        super().__init__(help, options, subcommands, description, False)


class Command(_Level):
    """A command's help, options and subcommands. `quick=True` (for commands whose start-up is
    benchmarked): the CLI parses their plain lines with `parse`, without importing argparse.
    `bare=True`: it may be given without a subcommand. `program=NAME`: the command line of
    another program, parsed by the walk alone (see the module's doc); `unknown(words)` then
    says what a subcommand it does not have is ("init", "env export")."""

    __slots__ = ("quick", "program", "unknown")

    def __init__(self, help: str, options: Sequence[Option | OneOf] = (), *, subcommands: Sequence[Sub] = (),
                 bare: bool = False, description: str | None = None, quick: bool = False,
                 program: str | None = None, unknown: Callable[[str], str] | None = None) -> None:
        super().__init__(help, options, subcommands, description, bare)
        self.program, self.unknown, self.quick = program, unknown, quick or program is not None
        self._check(())
        if self.quick and not self.walkable():
            raise ValueError(f"{help!r}: quick, but its positionals are more than `parse` models")
        if program and any(o.kind == "other" for o in _every_option(self)):
            raise ValueError(f"{help!r}: a program's line has only options the walk models")

    def add_parser(self, sub: Any, name: str, extra: Sequence[Option] = ()) -> argparse.ArgumentParser:
        """The command's parser, added to argparse's subparsers `sub` under `name`. `extra`: the
        CLI's options (--root) that every level takes too, hidden, keeping the value given
        before (SUPPRESS)."""
        import argparse

        hidden = {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        return self._parser(sub, name, [(o, hidden) for o in extra], ())

    def parse(self, argv: Sequence[str], preset: Mapping[str, Any],
              extra: Sequence[Option] = ()) -> SimpleNamespace | None:
        """The namespace argparse makes of `argv` (the words after the command's name), or None
        where this walk is not sure to agree (a program's command: a UsageError instead).
        `preset`: values argparse would hold already (the global options', `set_defaults`);
        `extra`: options the CLI adds to every level of every command."""
        walked = self._walk(list(argv), preset, extra)
        if not isinstance(walked, str):
            return walked
        if self.program is None:
            return None
        raise UsageError(walked)

    def _walk(self, argv: list[str], preset: Mapping[str, Any], extra: Sequence[Option]) -> SimpleNamespace | str:
        """The namespace, or what a program's error says of the line where the walk declines."""
        if not self.walkable():
            return f"{self.help}: more than the walk models"
        prog = self.program or "sitestack"
        level: _Level = self
        above = list(extra)  # options of the levels above `level` (argparse: SUPPRESS there)
        opts = self.flat()
        visited = list(opts)
        ns: dict[str, Any] = {o.dest: o.default for o in (*above, *opts)}
        if self.subcommands:
            ns[SUBCOMMAND] = None
        ns.update(preset)
        typed: list[str] = []  # the subcommand's words so far, canonical
        said = ""  # what an error says first: "conda install: "
        by_flag = {f: o for o in (*opts, *above) if not o.positional for f in o.flags}
        positionals = [o for o in opts if o.positional]
        seen: set[Option] = set()
        changed: set[Option] = set()  # given a value other than its default (argparse's "is not")
        n_pos = 0
        listing = False  # the last word went to a list positional: the next plain word does too
        i = 0
        while i < len(argv):
            arg = argv[i]
            nxt = positionals[n_pos] if n_pos < len(positionals) else None
            if nxt is not None and nxt.kind == "rest" and (arg == "--" or not _optionlike(arg)):
                ns[nxt.dest] = argv[i + (arg == "--"):]  # as _rest_action: a '--' that starts it goes
                n_pos += 1
                break
            o = by_flag.get(arg)
            word: str | None = None
            if o is None and arg.startswith("--") and "=" in arg:
                flag, _, word = arg.partition("=")
                o = by_flag.get(flag)
                if o is None or o.kind not in ("value", "append"):
                    return f"{said}unknown option {arg} ({prog} --help)"
                if word == "--":  # argparse drops a '--' value
                    return f"{said}{flag} needs a value"
            elif o is not None:
                if o.kind in ("value", "append"):
                    # argparse takes a next word starting with '-' for an option (or a negative number)
                    if i + 1 == len(argv) or _optionlike(argv[i + 1]):
                        return f"{said}{arg} needs a value"
                    i += 1
                    word = argv[i]
                elif o.kind != "flag":
                    return f"{said}{arg}: more than the walk models"
            elif _optionlike(arg):
                return f"{said}unknown option {arg} ({prog} --help)"
            elif level.subcommands:
                sub = level.table.get(arg)
                typed.append(sub.key if sub else arg)
                if sub is None:
                    return self._elsewhere(typed)
                # argparse: the subparser's defaults replace what the levels above set
                above, level, opts = [*above, *opts], sub, sub.flat()
                visited += opts
                ns.update({o.dest: o.default for o in opts})
                ns[SUBCOMMAND] = None if sub.subcommands else " ".join(typed)
                said = f"{prog} {sub.name}: "
                by_flag = {f: o for o in (*opts, *above) if not o.positional for f in o.flags}
                positionals = [o for o in opts if o.positional]
                seen, changed, n_pos, listing = set(), set(), 0, False
                i += 1
                continue
            elif listing:
                o, word = positionals[n_pos - 1], arg
            elif nxt is None:
                last = positionals[-1] if positionals else None
                if last is not None and last.nargs == "*":  # argparse takes one run of them
                    return (f"{said}unexpected {arg!r}: give the {last.kwargs.get('metavar', last.dest)}s "
                            "together, before or after the options")
                return f"{said}unexpected argument {arg!r} ({prog} --help)"
            else:
                o, word = nxt, arg
                n_pos += 1
            value: Any = True
            if word is not None:
                try:
                    value = o.type(word) if o.type else word
                except Exception:  # noqa: BLE001  # argparse's error to word (ValueError, TypeError, ...)
                    return f"{said}{arg}: {word!r} is not a {getattr(o.type, '__name__', 'value')}"
                if o.choices is not None and value not in o.choices:
                    return f"{said}{arg}: {word!r} is not one of {', '.join(map(str, o.choices))}"
            if o.kind == "append":
                value = [*(ns[o.dest] or ()), value]
            elif o.nargs == "*":
                value = [*ns[o.dest], value] if listing else [value]
            elif self.program and o.kind == "value" and o in seen:
                # argparse takes the last; a second -p is more likely a slip than a wish
                return f"{said}{arg} given twice"
            ns[o.dest] = value
            listing = o.nargs == "*"
            seen.add(o)
            if value is not o.default:
                changed.add(o)
            i += 1
        if level.subcommands and not level.bare:
            return self._elsewhere(typed)
        for o in positionals[n_pos:]:
            if o.nargs is None or (o.nargs == "?" and o.choices is not None):
                # argparse checks a missing '?' one's default against its choices too
                return f"{said}needs {o.kwargs.get('metavar', o.dest)} ({prog} --help)"
            if o.nargs in ("*", REST) and o.default is None:
                ns[o.dest] = []
        for o in opts:
            if o.required and o not in seen:
                return f"{said}needs {o.flags[0]} ({prog} --help)"
        for item in level.options:
            if isinstance(item, OneOf):
                given = [o.flags[0] for o in item.options if o in seen]
                if len(given) > 1:
                    return f"{said}{' and '.join(given)} together"
                if item.required and not changed.intersection(item.options):
                    return f"{said}needs one of {', '.join(o.flags[0] for o in item.options)}"
        for o in visited:  # argparse converts a string default that was left as it is
            if o.type and o not in seen and isinstance(o.default, str) and ns[o.dest] is o.default:
                try:
                    ns[o.dest] = o.type(o.default)
                except Exception:  # noqa: BLE001
                    return f"{said}{o.dest}: bad default"
        return SimpleNamespace(**ns)

    def _elsewhere(self, typed: list[str]) -> str:
        """What a missing or unknown subcommand gets said."""
        words = " ".join(typed)
        if self.unknown is not None:
            return self.unknown(words)
        return f"{self.program or 'sitestack'} {words}: unknown or incomplete subcommand".replace("  ", " ")


def _optionlike(word: str) -> bool:
    """argparse takes it for an option (or an unknown one): '-x', '--x', '--'; not '-' alone."""
    return word.startswith("-") and word != "-"


def _every_option(level: _Level) -> list[Option]:
    return [*level.flat(), *(o for s in level.subcommands for o in _every_option(s))]


def _rest_action() -> type:
    """argparse.REMAINDER without a '--' that starts it: argparse 3.11 keeps it in the list
    (`conda run -- CMD` would run `--`); the walk drops it too. Made here, where argparse is
    imported anyway: this module must not import it."""
    import argparse

    class Rest(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: Any, option_string: str | None = None) -> None:
            setattr(namespace, self.dest, values[1:] if values[:1] == ["--"] else values)

    return Rest
