"""unload: shell code that undoes `sitestack load`, restoring every variable exactly."""

from __future__ import annotations

import argparse
from typing import Any

SHELLS = ("bash", "zsh", "sh", "fish")


def register(sub: Any) -> None:
    p = sub.add_parser("unload", help='print shell code that undoes `sitestack load`: eval "$(sitestack unload)"')
    p.add_argument("--shell", choices=SHELLS, default="bash", help="shell to write for (default: bash)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from sitestack.user.shellenv import unload

    sys.stdout.write(unload(dict(os.environ), args.shell).code)
    return 0
