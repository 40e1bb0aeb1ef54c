from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("verify", help="prove a stack is byte-for-byte as built (sha256 manifest)")
    p.add_argument("ref", nargs="?", metavar="NAME[/VERSION]", help="default: every stack")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.core.manifest import Manifest, verify
    from sitestack.core.records import MANIFEST
    from sitestack.output import emit_json
    from sitestack.site.registry import Site

    site = Site(resolve_root(args.root))
    recs = [site.get(args.ref)] if args.ref else site.versions()
    report: list[dict[str, Any]] = []
    for rec in recs:
        problems = verify(rec.prefix, Manifest.load(rec.records / MANIFEST), check_mode=True)
        writable = _writable(rec.prefix)
        report.append({"stack": rec.ref, "ok": not problems and not writable,
                       "problems": [{"path": m.path, "problem": m.problem} for m in problems]
                       + [{"path": p, "problem": "writable"} for p in writable[:20]]})
    if args.json:
        emit_json(report)
    else:
        for r in report:
            print(f"{r['stack']}: {'ok' if r['ok'] else 'CHANGED'}")
            for p in r["problems"][:20]:
                print(f"  {p['problem']}: {p['path']}")
    return 0 if all(r["ok"] for r in report) else 1


def _writable(prefix: Any) -> list[str]:
    import os
    import stat

    out = []
    for dirpath, dirnames, filenames in os.walk(prefix):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o222:
                out.append(os.path.relpath(p, prefix))
    return out
