from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("unmount and remove what `sitestack stage` put under DIR/sitestack", options=(
    Option("--to", required=True, help="the folder given to stage --to"),
    Option("--id", dest="ident", help="remove only this staged copy (NAME-VERSION-HASH)"),
    Option("--node", help="node name for a {node} in --to (default: this host)"),
    Option("--json", action="store_true"),
))


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
