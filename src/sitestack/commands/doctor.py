"""sitestack doctor [PATH...]: what is wrong, and the exact command that fixes it."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check this shell and layers (default: $VIRTUAL_ENV); exit 1 if anything is wrong")
    p.add_argument("paths", metavar="PATH", nargs="*")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.user.doctor import diagnose

    findings = diagnose(args.paths)
    if args.json:
        from sitestack.output import emit_json

        emit_json({"ok": not findings, "findings": [f.to_json() for f in findings]})
    elif findings:
        for f in findings:
            print(f"[{f.kind}] {f.message}\n  fix: {f.fix}")
    else:
        print("no problems found")
    return 1 if findings else 0
