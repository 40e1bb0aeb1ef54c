"""sitestack list [NAME]: published versions, their sizes and state."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("list published stack versions", options=(
    Option("name", nargs="?", help="only this stack"),
    Option("--all", action="store_true", help="retired versions too, with their date and message"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json, human_bytes, table
    from sitestack.site.inventory import list_versions

    listing = list_versions(resolve_root(args.root), args.name, include_retired=args.all)
    retired = listing.retired
    if args.json:
        emit_json(listing.to_json())
        return 0
    if not listing.versions and not retired:
        print(f"no stacks in {listing.root}")
        return 0
    table(
        ["stack", "python", "packages", "size", "on disk", "not shared", "status"],
        [[v.ref, v.python, v.packages, human_bytes(v.bytes), human_bytes(v.disk_bytes),
          human_bytes(v.new_disk_bytes), ", ".join(v.status)] for v in listing.versions],
        title=f"stacks in {listing.root}",
    )
    print(f"total on disk: {human_bytes(listing.disk_bytes)} "
          "(files shared between versions through hardlinks counted once)")
    for r in retired:
        print(f"{r.ref}  retired on {r.date}: {r.message}")
    return 0
