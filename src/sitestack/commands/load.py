"""load: shell code that loads a stack like its modulefile, for shells with no module system."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

SHELLS = ("bash", "zsh", "sh", "fish")


COMMAND = Command('print shell code that loads a stack: eval "$(sitestack load conda)"', options=(
    Option("ref", metavar="NAME[/VERSION]"),
    Option("--shell", choices=SHELLS, default="bash", help="shell to write for (default: bash)"),
))


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site
    from sitestack.user.shellenv import load

    res = load(Site(resolve_root(args.root)), args.ref, dict(os.environ), args.shell)
    for msg in res.messages:
        print(msg, file=sys.stderr)
    sys.stdout.write(res.code)
    return 0
