from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("modulefiles", help="rewrite every modulefile from the stacks' records")
    p.add_argument("name", nargs="?", help="only this stack")
    p.set_defaults(func=run)


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
