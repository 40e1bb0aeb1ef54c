"""sitestack doctor [PATH...]: what is wrong, and the exact command that fixes it."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check this shell and layers (default: $VIRTUAL_ENV); exit 1 if anything is wrong")
    p.add_argument("paths", metavar="PATH", nargs="*")
    p.add_argument("--fix", action="store_true",
                   help="first undo and remove what killed `sitestack install` runs left beside the layers "
                        "(refused while an install holds the layer's lock)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.user.doctor import diagnose, fix

    fixed = fix(args.paths) if args.fix else []
    findings = diagnose(args.paths)
    if args.json:
        from sitestack.output import emit_json

        data: dict[str, Any] = {"ok": not findings, "findings": [f.to_json() for f in findings]}
        if args.fix:
            data["fixed"] = [str(p) for p in fixed]
        emit_json(data)
        return 1 if findings else 0
    for p in fixed:
        print(f"fixed: undid and removed {p}")
    if findings:
        for f in findings:
            print(f"[{f.kind}] {f.message}\n  fix: {f.fix}")
    else:
        print("no problems found")
    return 1 if findings else 0
