"""sitestack retire NAME/VERSION: remove a stack, keep its records, make `module load` explain."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command(
    "remove a published version; its records stay, `module load` says why",
    description="Move NAME/VERSION out of stacks/ in one rename and delete it. Its "
    "records (spec, lock, manifest, build log, smoke results) stay under "
    "ROOT/.sitestack/retired/, its modulefiles become hidden stubs that fail with "
    "the date and message, and its `pack --publish` archive goes too. "
    "`sitestack restore` brings it back.",
    options=(
        Option("ref", metavar="NAME/VERSION"),
        Option("--message", "-m", help="what users read when they load it (one line)"),
        Option("--keep-archive", action="store_true",
               help="keep ROOT/archives/NAME/VERSION.tar.zst (for `restore --from-archive`)"),
        Option("--json", action="store_true"),
    ),
)


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.site.retire import retire

    res = retire(resolve_root(args.root), args.ref, args.message, keep_archive=args.keep_archive)
    if args.json:
        from sitestack.output import emit_json

        emit_json(res.to_json())
        return 0
    what = "finished an interrupted retirement of" if res.completed_earlier_run else "retired"
    print(f"{what} {res.ref} on {res.date}: {res.message}")
    print(f"  records kept in {res.records}")
    if res.archive_removed:
        print(f"  removed its archive {res.archive_removed}")
    if res.archive_kept:
        print(f"  kept its archive {res.archive_kept} (`sitestack restore {res.ref} --from-archive`)")
    return 0
