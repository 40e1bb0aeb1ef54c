"""sitestack diff OLD NEW: packages added, removed and changed between two versions."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("packages added, removed and changed between two versions", options=(
    Option("old", metavar="NAME/VERSION"),
    Option("new", metavar="NAME/VERSION"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json, table
    from sitestack.site.inventory import diff

    d = diff(resolve_root(args.root), args.old, args.new)
    if args.json:
        emit_json(d.to_json())
        return 0
    if d.same:
        print(f"{d.old} and {d.new}: no differences (Python {d.old_python}, same packages)")
        return 0
    if d.old_python != d.new_python:
        print(f"python: {d.old_python} -> {d.new_python}")
    if d.changes:
        table(["package", d.old, d.new], [(c.name, c.old or "-", c.new or "-") for c in d.changes])
    else:
        print("packages: no differences")
    return 0
