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
    from sitestack.user.check import check_layer

    res = check_layer(args.path)
    if args.json:
        emit_json(res.to_json())
    elif res.problems:
        for p in res.problems:
            print(f"{p.message()}\n  fix: {p.fix}")
    else:
        print(f"{res.layer}: no broken requirements ({res.checked} distributions on {res.stack})")
    return 0 if res.ok else 1
