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
    from sitestack.user.check import probe, shadow_json, shadows
    from sitestack.user.layer import layer_stack, open_layer

    layer = open_layer(args.path)
    rec = layer_stack(layer)
    items = shadows(probe(layer))
    if args.json:
        emit_json({"layer": str(layer.path), "stack": rec.ref, "inherit": layer.inherit,
                   "shadows": shadow_json(items)})
        return 0
    if not items:
        print(f"{layer.path}: nothing shadows {rec.ref}")
        return 0
    table(["name", "layer", "stack", "active"],
          [(s.name, s.layer_version, s.stack_version, s.active) for s in items],
          title=f"{layer.path} on {rec.ref}" + ("" if layer.inherit else " (inherit off)"))
    return 0
