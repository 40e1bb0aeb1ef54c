"""sitestack inherit PATH on|off: flip include-system-site-packages, as a hand edit would."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("turn a layer's view of its stack's packages on or off", options=(
    Option("path", metavar="PATH"),
    # Not `choices`: argparse's own error is multi-line; ours is one line, exit 2.
    Option("state", metavar="on|off", nargs="?"),
    Option("--json", action="store_true"),
))


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
