"""sitestack unhide NAME/VERSION: shown in `module avail` again (the site's state)"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

COMMAND = Command("show in `module avail` again", options=(
    Option("ref", metavar="NAME/VERSION"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site

    rec = Site(resolve_root(args.root)).hide(args.ref, hidden=False)
    print(f"{rec.ref} is visible")
    return 0
