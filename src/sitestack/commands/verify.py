"""sitestack verify [NAME[/VERSION]]: each stack byte-for-byte as built; exit 1 if not."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("verify", help="prove a stack is byte-for-byte as built (sha256 manifest)")
    p.add_argument("ref", nargs="?", metavar="NAME[/VERSION]", help="default: every stack")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


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
