"""sitestack default NAME/VERSION: what `module load NAME` picks (the site's state)"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

COMMAND = Command("make NAME/VERSION what `module load NAME` picks", options=(
    Option("ref", metavar="NAME/VERSION"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site

    rec = Site(resolve_root(args.root)).set_default(args.ref)
    print(f"{rec.name}: default is now {rec.version}")
    return 0
