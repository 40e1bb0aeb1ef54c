from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("remove what `sitestack stage` put under DIR/sitestack", options=(
    Option("--to", required=True, help="the folder given to stage --to"),
    Option("--id", dest="ident", help="remove only this staged copy (NAME-VERSION-HASH)"),
    Option("--node", help="node name for a {node} in --to (default: this host)"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.output import emit_json
    from sitestack.scale.stage import unstage

    res = unstage(args.to, args.node, args.ident)
    if args.json:
        emit_json({"removed": list(res.removed), "kept": list(res.kept)})
    else:
        for p in res.removed:
            print(f"removed {p}")
        for p in res.kept:
            print(f"left alone (not made by sitestack stage): {p}")
    return 0
