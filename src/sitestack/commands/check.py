"""sitestack check PATH: broken requirements across a layer and its stack; exit 1 if any."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="check requirements across a layer and its stack (like pip check)")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.output import emit_json
    from sitestack.user.check import check, probe, problem_json
    from sitestack.user.layer import layer_stack, open_layer

    layer = open_layer(args.path)
    rec = layer_stack(layer)
    view = probe(layer)
    problems = check(view)
    if args.json:
        emit_json({"layer": str(layer.path), "stack": rec.ref, "ok": not problems,
                   "checked": len(view.visible()), "problems": problem_json(problems)})
    elif problems:
        for p in problems:
            print(f"{p.message()}\n  fix: {p.fix}")
    else:
        print(f"{layer.path}: no broken requirements ({len(view.visible())} distributions on {rec.ref})")
    return 1 if problems else 0
