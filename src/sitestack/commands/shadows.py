"""sitestack shadows PATH: distributions in both the layer and its stack."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("shadows", help="list what a layer shadows in its stack")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


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
