"""sitestack shadows PATH: distributions in both the layer and its stack."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("list what a layer shadows in its stack", options=(
    Option("path", metavar="PATH"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.output import emit_json, table
    from sitestack.user.check import layer_shadows

    res = layer_shadows(args.path)
    if args.json:
        emit_json(res.to_json())
    elif not res.shadows:
        print(f"{res.layer}: nothing shadows {res.stack}")
    else:
        table(["name", "layer", "stack", "active"],
              [(s.name, s.layer_version, s.stack_version, s.active) for s in res.shadows],
              title=f"{res.layer} on {res.stack}" + ("" if res.inherit else " (inherit off)"))
    return 0
