"""load: shell code that loads a stack like its modulefile, for shells with no module system."""

from __future__ import annotations

import argparse
from typing import Any

SHELLS = ("bash", "zsh", "sh", "fish")


def register(sub: Any) -> None:
    p = sub.add_parser("load", help='print shell code that loads a stack: eval "$(sitestack load conda)"')
    p.add_argument("ref", metavar="NAME[/VERSION]")
    p.add_argument("--shell", choices=SHELLS, default="bash", help="shell to write for (default: bash)")
    p.set_defaults(func=run)


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
