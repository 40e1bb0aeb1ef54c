"""sitestack undeprecate NAME/VERSION: remove a deprecation (the site's state)"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

COMMAND = Command("remove a deprecation", options=(
    Option("ref", metavar="NAME/VERSION"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site

    rec = Site(resolve_root(args.root)).undeprecate(args.ref)
    print(f"{rec.ref} is no longer deprecated")
    return 0
