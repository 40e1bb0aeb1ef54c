"""sitestack inherit PATH on|off: flip include-system-site-packages, as a hand edit would."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("inherit", help="turn a layer's view of its stack's packages on or off")
    p.add_argument("path", metavar="PATH")
    # Not `choices`: argparse's own error is multi-line; ours is one line, exit 2.
    p.add_argument("state", metavar="on|off", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.errors import UsageError
    from sitestack.user.layer import set_inherit

    state = (args.state or "").lower()
    if state not in ("on", "off"):
        raise UsageError(f"inherit takes on or off, not {args.state!r}" if args.state
                         else "inherit takes on or off")
    layer, changed = set_inherit(args.path, state == "on")
    if args.json:
        from sitestack.output import emit_json

        emit_json({"path": str(layer.path), "inherit": layer.inherit, "changed": changed})
        return 0
    print(f"{layer.path}: inherit {'on' if layer.inherit else 'off'}" + ("" if changed else " (unchanged)"))
    return 0
