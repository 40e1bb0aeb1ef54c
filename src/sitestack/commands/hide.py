"""sitestack hide NAME/VERSION: hidden from `module avail`, still loadable by full name (the site's state)"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

COMMAND = Command("hide from `module avail` (still loadable by full name)", options=(
    Option("ref", metavar="NAME/VERSION"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site

    rec = Site(resolve_root(args.root)).hide(args.ref, hidden=True)
    print(f"{rec.ref} is hidden")
    return 0
