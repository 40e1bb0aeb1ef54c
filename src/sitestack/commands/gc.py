"""sitestack gc: remove what no published stack uses (cache entries, killed runs' temps, old archives)."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("free package-cache entries, temp folders and archives no published stack uses", options=(
    Option("--dry-run", "-n", action="store_true", help="only say what would go"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.build.gc import gc
    from sitestack.core.layout import resolve_root
    from sitestack.output import human_bytes

    res = gc(resolve_root(args.root), dry_run=args.dry_run)
    if args.json:
        from sitestack.output import emit_json

        emit_json(res.to_json())
        return 0
    verb = "would remove" if res.dry_run else "removed"
    for r in res.removed:
        print(f"{verb} {r.kind} {r.path} ({human_bytes(r.bytes)})")
    print(f"{'would free' if res.dry_run else 'freed'} {human_bytes(res.bytes_freed)} "
          f"({len(res.removed)} item(s)); {res.kept_entries} cache entries still in use")
    return 0
