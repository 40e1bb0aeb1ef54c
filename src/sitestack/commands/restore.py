"""sitestack restore NAME/VERSION: a retired version back, from its kept spec and lock or archive."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("restore", help="rebuild a retired version at its original path, same lock",
                       description="Rebuild a retired NAME/VERSION from its kept spec and lock (smoke-"
                       "tested, read-only, atomic), or with --from-archive unpack its kept "
                       "`pack --publish` archive, checking every file's sha256 against the kept manifest.")
    p.add_argument("ref", metavar="NAME/VERSION")
    p.add_argument("--from-archive", action="store_true",
                   help="unpack ROOT/archives/NAME/VERSION.tar.zst (kept by `retire --keep-archive`)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true", help="print the build log as it goes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.core.log import BuildLog
    from sitestack.scale.restore import restore

    res = restore(resolve_root(args.root), args.ref, from_archive=args.from_archive,
                  log=BuildLog(echo=args.verbose and not args.json))
    if args.json:
        from sitestack.output import emit_json

        emit_json(res.to_json())
        return 0
    print(f"restored {res.ref} at {res.prefix} from its {res.source} ({len(res.packages)} packages, "
          f"{res.files} files, {res.seconds:.1f}s); lock {'unchanged' if res.same_lock else 'DIFFERS'}")
    return 0
