"""sitestack deprecate NAME/VERSION: `module load` prints a message (the site's state)"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

COMMAND = Command("`module load` of NAME/VERSION prints a message", options=(
    Option("ref", metavar="NAME/VERSION"),
    Option("--message", "-m", required=True),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site

    rec = Site(resolve_root(args.root)).deprecate(args.ref, args.message)
    print(f"{rec.ref} is deprecated")
    return 0
