from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("unstage", help="unmount and remove what `sitestack stage` put under DIR/sitestack")
    p.add_argument("--to", required=True, help="the folder given to stage --to")
    p.add_argument("--id", dest="ident", help="remove only this staged copy (NAME-VERSION-HASH)")
    p.add_argument("--node", help="node name for a {node} in --to (default: this host)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _helper(root: str | None) -> str | None:
    """The site's mount helper, which unmounts what it mounted (none where no site is found)."""
    from sitestack.core.layout import resolve_root
    from sitestack.errors import SitestackError
    from sitestack.site.config import mount_helper

    try:
        return mount_helper(resolve_root(root))
    except SitestackError:
        return None


def run(args: argparse.Namespace) -> int:
    from sitestack.output import emit_json
    from sitestack.scale.node import unstage

    res = unstage(args.to, args.node, args.ident, _helper(args.root))
    if args.json:
        emit_json({"removed": list(res.removed), "kept": list(res.kept)})
    else:
        for p in res.removed:
            print(f"removed {p}")
        for p in res.kept:
            print(f"left alone (not made by sitestack stage): {p}")
    return 0
