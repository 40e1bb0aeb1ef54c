"""unload: shell code that undoes `sitestack load`, restoring every variable exactly."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

SHELLS = ("bash", "zsh", "sh", "fish")


COMMAND = Command('print shell code that undoes `sitestack load`: eval "$(sitestack unload)"', options=(
    Option("--shell", choices=SHELLS, default="bash", help="shell to write for (default: bash)"),
))


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from sitestack.user.shellenv import unload

    sys.stdout.write(unload(dict(os.environ), args.shell).code)
    return 0
