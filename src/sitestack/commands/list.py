from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="list published stack versions")
    p.add_argument("name", nargs="?", help="only this stack")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json, human_bytes, table
    from sitestack.site.registry import Site

    site = Site(resolve_root(args.root))
    state = site.state()
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()  # inodes already counted by an earlier version
    for rec in site.versions(args.name):
        vs = site.version_state(rec, state)
        disk, new = _disk_use(rec.prefix, seen)
        rows.append({
            "name": rec.name, "version": rec.version, "python": rec.python, "kind": rec.kind,
            "packages": len(rec.packages), "files": rec.files, "bytes": rec.bytes, "disk_bytes": disk, "new_disk_bytes": new,
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
        ["stack", "python", "packages", "size", "on disk", "not shared", "status"],
        [[f"{r['name']}/{r['version']}", r["python"], r["packages"], human_bytes(r["bytes"]),
          human_bytes(r["disk_bytes"]), human_bytes(r["new_disk_bytes"]),
          ", ".join(s for s, on in (("default", r["default"]), ("hidden", r["hidden"]),
                                    ("deprecated", r["deprecated"])) if on)]
         for r in rows],
        title=f"stacks in {site.root.path}",
    )
    print(f"total on disk: {human_bytes(sum(r['new_disk_bytes'] for r in rows))} "
          "(files shared between versions through hardlinks counted once)")
    return 0


def _disk_use(prefix: object, seen: set[tuple[int, int]]) -> tuple[int, int]:
    """(blocks used by this prefix, blocks not already counted in `seen`)."""
    import os

    disk = new = 0
    for dirpath, _dirs, files in os.walk(str(prefix)):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            disk += st.st_blocks * 512
            if key not in seen:
                seen.add(key)
                new += st.st_blocks * 512
    return disk, new
