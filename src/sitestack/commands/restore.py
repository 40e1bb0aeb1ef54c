"""sitestack restore NAME/VERSION: a retired version back, from its kept spec and lock or archive."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command(
    "rebuild a retired version at its original path, same lock",
    description="Rebuild a retired NAME/VERSION from its kept spec and lock (smoke-"
    "tested, read-only, atomic), or with --from-archive unpack its kept "
    "`pack --publish` archive, checking every file's sha256 against the kept manifest.",
    options=(
        Option("ref", metavar="NAME/VERSION"),
        Option("--from-archive", action="store_true",
               help="unpack ROOT/archives/NAME/VERSION.tar.zst (kept by `retire --keep-archive`)"),
        Option("--json", action="store_true"),
        Option("--verbose", "-v", action="store_true", help="print the build log as it goes"),
    ),
)


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
