"""sitestack rebase PATH NAME/VERSION: move a layer onto another stack, atomically."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("rebuild a layer on another stack, keeping its own packages", options=(
    Option("path", metavar="PATH"),
    Option("ref", metavar="NAME[/VERSION]"),
    Option("--find-links", action="append", default=[], metavar="DIR_OR_URL",
           help="where to find the layer's packages (default: the new stack's spec)"),
    Option("--index-url"),
    Option("--no-index", action="store_true"),
    Option("--allow-missing-stack", action="store_true",
           help="rebase even though the layer's old stack was deleted"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.user.rebase import IndexOptions, rebase

    res = rebase(args.path, args.ref, root=args.root,
                 index=IndexOptions(tuple(args.find_links), args.index_url, args.no_index),
                 allow_missing_stack=args.allow_missing_stack)
    if args.json:
        from sitestack.output import emit_json

        emit_json({"path": str(res.path), "old_stack": res.old_stack, "new_stack": res.new_stack,
                   "changes": [{"name": c.name, "old": c.old, "new": c.new, "action": c.action}
                               for c in res.changes], "kernels": list(res.kernels)})
        return 0
    print(f"{res.path}: {res.old_stack} -> {res.new_stack}")
    words = {"kept": "kept", "changed": "changed", "from-stack": "now from the stack", "added": "added"}
    for c in res.changes:
        print(f"  {c.name}: {c.old or '-'} -> {c.new or '-'}  ({words[c.action]})")
    if not res.changes:
        print("  (the layer had no packages of its own)")
    for k in res.kernels:
        print(f"  kernel {k} rewritten for {res.new_stack}")
    return 0
