"""The CLI front: every module in sitestack/commands is a command (`COMMAND`, `run`).

Each command declares its options once (`sitestack/options.py`); its argparse parser is built
from that, and only for the command named: start-up counts (`sitestack venv` is benchmarked
against `uv venv`). A command declared quick parses its plain lines without argparse at all.
"""

from __future__ import annotations

import os
import sys

from sitestack import TYPE_CHECKING, __version__, commands
from sitestack.errors import ConflictError, SitestackError, UsageError
from sitestack.options import Option

if TYPE_CHECKING:
    import argparse
    from types import ModuleType
    from typing import Any

ROOT = Option("--root", help="site root (default: $SITESTACK_ROOT, then the loaded stack module's root, "
                              "then a per-user data folder)")


def _command_module(argv: list[str]) -> str | None:
    """The command named on the command line, if a module of that name exists.

    Building only that command's parser keeps start-up fast; anything unusual falls back to
    the full parser.
    """
    it = iter(argv)
    for arg in it:
        if arg == "--root":
            next(it, None)
        elif arg.startswith("--root="):
            continue
        elif arg.startswith("-"):
            return None
        else:
            # A file test, not importlib.util.find_spec: importing importlib.util (and
            # pkgutil) costs more than the rest of the look-up.
            name = arg.replace("-", "_")
            found = any(os.path.isfile(os.path.join(d, f"{name}.py")) for d in commands.__path__)
            return name if name.isidentifier() and found else None
    return None


def _command(mod: str) -> ModuleType:
    name = f"{commands.__name__}.{mod}"
    # The builtin, not importlib.import_module: importing importlib (and warnings with it, this
    # early) costs `sitestack venv` 0.9 ms of its ~30 ms CPU (bench/startup.py --module importlib,
    # docs/benchmarks.md 2026-12-06); the one place the tree does this.
    __import__(name)
    return sys.modules[name]


def _quick_args(only: str, argv: list[str]) -> object | None:
    """The namespace of a plain command line of a quick command (options.Command.parse), or
    None: then argparse parses it."""
    mod = _command(only)
    if not mod.COMMAND.quick:
        return None
    root = None
    i = 0
    while argv[i].startswith("-"):  # the words _command_module walked past: --root only
        if argv[i] == "--root":
            if i + 1 == len(argv) or argv[i + 1].startswith("-"):
                return None
            root = argv[i + 1]
            i += 2
        elif argv[i].startswith("--root="):
            root = argv[i].partition("=")[2]
            i += 1
        else:
            return None
    if argv[i] != only.replace("_", "-"):  # the parser's name (`sitestack foo_bar` is argparse's error)
        return None
    result: object | None = mod.COMMAND.parse(argv[i + 1:], {"root": root, "command": argv[i], "func": mod.run},
                                              extra=_extra(mod))
    return result


def _extra(mod: ModuleType) -> tuple[Option, ...]:
    """The options the CLI adds to a command (at every level): --root, but not to another
    program's command line (`conda`'s words are conda's)."""
    return () if mod.COMMAND.program else (ROOT,)


def parser(only: str | None = None) -> argparse.ArgumentParser:
    import argparse  # not at import: the quick commands mostly parse without it

    p = argparse.ArgumentParser(prog="sitestack", description="Dated, read-only Python stacks for shared machines.")
    p.add_argument("--version", action="version", version=f"sitestack {__version__}")
    ROOT.add_to(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if only:
        names = [only]
    else:
        import pkgutil

        names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__))
    for name in names:
        mod = _command(name)
        # --root works before or after the command (and its subcommand): SUPPRESS there keeps
        # the global value
        sp = mod.COMMAND.add_parser(sub, name.replace("_", "-"), extra=_extra(mod))
        sp.set_defaults(func=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        # `sitestack list | head -1`: the reader has what it wanted. End quietly, as cat
        # does; point stdout at devnull so the flush at exit cannot fail again.
        if not _stdout_closed():
            raise  # some other pipe broke: a bug, not a reader that stopped
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _run(argv: list[str]) -> int:
    # Nothing sitestack creates is ever world-writable, whatever the caller's umask (a site
    # built under `umask 000` would let any user replace its locks, state or modulefiles).
    os.umask(os.umask(0) | 0o002)
    only = _command_module(argv)
    # another program's command line (`conda`) says its errors, its own words' too, as that program
    me = (_command(only).COMMAND.program if only else None) or "sitestack"
    try:
        args: Any = _quick_args(only, argv) if only else None
        if args is None:
            try:
                args = parser(only).parse_args(argv)
            except SystemExit:
                sys.stdout.flush()  # --help into a closed pipe fails here, not at exit
                raise
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: buffered output meets a closed pipe here
        return code
    except SitestackError as e:
        print(f"{me}: error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{me}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        import errno

        if e.errno == errno.ENAMETOOLONG:  # a path argument the kernel refuses: bad input
            print(f"sitestack: error: a file name in {str(e.filename)[:80]!r}... is too long "
                  f"({e.strerror})", file=sys.stderr)
            return UsageError.exit_code
        msg = _disk_error(e)
        if msg is None:
            raise  # any other OSError is a bug: keep its traceback
        print(f"{me}: error: {msg}", file=sys.stderr)
        return ConflictError.exit_code


def _disk_error(e: OSError) -> str | None:
    """One line for a full disk or a folder this user may not write, wherever it struck
    (a shutil.Error from a tree copy lists every failed file: name the first)."""
    import errno
    import shutil

    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        src, dst, why = (list(e.args[0][0]) + ["", "", ""])[:3]
        n = len(e.args[0])
        if "No space left" in str(why) or "Disk quota" in str(why):
            return f"disk full writing {dst} ({why}; {n} files failed)"
        return None
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full writing {e.filename or 'a file'}: {e.strerror}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and e.filename:
        return f"cannot write {e.filename}: {e.strerror} (not writable by this user)"
    return None


def _stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _fd, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True  # stdout closed or replaced: nothing left to tell


if __name__ == "__main__":
    sys.exit(main())
