"""sitestack verify [NAME[/VERSION]]: each stack byte-for-byte as built; exit 1 if not."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("prove a stack is byte-for-byte as built (sha256 manifest)", options=(
    Option("ref", nargs="?", metavar="NAME[/VERSION]", help="default: every stack"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json
    from sitestack.site.verify import verify_stacks

    report = verify_stacks(resolve_root(args.root), args.ref)
    if args.json:
        emit_json(report.to_json())
    else:
        for s in report.stacks:
            print(f"{s.stack}: {'ok' if s.ok else 'CHANGED'}")
            for p in s.problems[:20]:
                print(f"  {p.problem}: {p.path}")
    return 0 if report.ok else 1
