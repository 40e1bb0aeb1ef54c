"""argparse front. Each module in sitestack/commands registers its own subcommand."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .errors import SitestackError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sitestack", description="Dated, read-only Python stacks for shared machines.")
    p.add_argument("--version", action="version", version=f"sitestack {__version__}")
    p.add_argument("--root", help="site root (default: $SITESTACK_ROOT, then a per-user data folder)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"{commands.__name__}.{mod}").register(sub)
    for sp in sub.choices.values():
        # --root works before or after the command; SUPPRESS keeps the global value.
        sp.add_argument("--root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SitestackError as e:
        print(f"sitestack: error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("sitestack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
