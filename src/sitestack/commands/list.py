from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="list published stack versions")
    p.add_argument("name", nargs="?", help="only this stack")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..fsutil import dir_size
    from ..layout import resolve_root
    from ..output import emit_json, human_bytes, table
    from ..site import Site

    site = Site(resolve_root(args.root))
    state = site.state()
    rows = []
    for rec in site.versions(args.name):
        vs = site.version_state(rec, state)
        _apparent, disk, _n = dir_size(rec.prefix)
        rows.append({
            "name": rec.name, "version": rec.version, "python": rec.python, "kind": rec.kind,
            "packages": len(rec.packages), "files": rec.files, "bytes": rec.bytes, "disk_bytes": disk,
            "default": site.default_version(rec.name) == rec.version, "hidden": vs.hidden,
            "deprecated": vs.deprecated, "prefix": str(rec.prefix),
        })
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print(f"no stacks in {site.root.path}")
        return 0
    table(
        ["stack", "python", "packages", "size", "on disk", "status"],
        [[f"{r['name']}/{r['version']}", r["python"], r["packages"], human_bytes(r["bytes"]),
          human_bytes(r["disk_bytes"]),
          ", ".join(s for s, on in (("default", r["default"]), ("hidden", r["hidden"]),
                                    ("deprecated", r["deprecated"])) if on)]
         for r in rows],
        title=f"stacks in {site.root.path}",
    )
    return 0
