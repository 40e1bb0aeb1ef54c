from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("diff", help="packages added, removed and changed between two versions")
    p.add_argument("old", metavar="NAME/VERSION")
    p.add_argument("new", metavar="NAME/VERSION")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json, table
    from sitestack.site.registry import Site

    site = Site(resolve_root(args.root))
    a, b = site.get(args.old), site.get(args.new)
    names = sorted(set(a.packages) | set(b.packages))
    rows = [(n, a.packages.get(n), b.packages.get(n)) for n in names if a.packages.get(n) != b.packages.get(n)]
    if args.json:
        emit_json({"old": a.ref, "new": b.ref, "python": [a.python, b.python],
                   "changes": [{"name": n, "old": o, "new": v} for n, o, v in rows]})
        return 0
    if a.python != b.python:
        print(f"python: {a.python} -> {b.python}")
    table(["package", a.ref, b.ref], [(n, o or "-", v or "-") for n, o, v in rows])
    return 0
