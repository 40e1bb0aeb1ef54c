"""sitestack modulefiles [NAME]: rewrite the modulefiles from the stacks' records."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("rewrite every modulefile from the stacks' records", options=(
    Option("name", nargs="?", help="only this stack"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site

    site = Site(resolve_root(args.root))
    if site.names():  # the sitestack users run, published anew if this one differs
        from sitestack.build.sitetool import ensure_tool

        site.require_writer()
        ensure_tool(site.root)
    written = site.write_modulefiles(args.name)
    print(f"wrote {len(written)} modulefiles under {site.root.lmod_dir} and {site.root.tcl_dir}")
    return 0
