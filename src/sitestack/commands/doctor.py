"""sitestack doctor [PATH...]: what is wrong, and the exact command that fixes it."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse
    from typing import Any


COMMAND = Command("check this shell and layers (default: $VIRTUAL_ENV); exit 1 if anything is wrong", options=(
    Option("paths", metavar="PATH", nargs="*"),
    Option("--fix", action="store_true",
           help="first undo and remove what killed `sitestack install` runs left beside the layers "
                "(refused while an install holds the layer's lock)"),
    Option("--json", action="store_true"),
))


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
