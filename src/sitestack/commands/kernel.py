"""sitestack kernel add|list|remove|prune: a layer or clone as a Jupyter kernel of the user's.

    sitestack kernel add [PATH] [--name NAME] [--display-name TEXT] [--force] [--json]
    sitestack kernel list [--json]
    sitestack kernel remove NAME [--json]
    sitestack kernel prune [--dry-run] [--json]
"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option, Sub

if TYPE_CHECKING:
    import argparse

COMMAND = Command("Jupyter kernels of your layers and clones (the site's come with its modules)", options=(
    Option("--json", action="store_true", help="the result as JSON (before or after the subcommand)"),
), subcommands=(
    Sub("add", "register a layer or clone as a kernel of yours", options=(
        Option("path", nargs="?", metavar="PATH", help="the layer or clone (default: the active one)"),
        Option("--name", help="the kernel's name, [a-z0-9._-] (default: from the folder's name)"),
        Option("--display-name", metavar="TEXT", help="what Jupyter shows (default: Python X.Y (NAME on STACK))"),
        Option("--force", action="store_true", help="take --name from another environment's kernel of sitestack's"),
    )),
    Sub("list", "sitestack's kernels Jupyter finds, with any problem"),
    Sub("remove", "remove one of your kernels", options=(Option("name", metavar="NAME", help="the kernel"),)),
    Sub("prune", "remove your kernels whose layer or clone is gone", options=(
        Option("--dry-run", action="store_true", help="only say which"),
    )),
))


def run(args: argparse.Namespace) -> int:
    return {"add": _add, "list": _list, "remove": _remove, "prune": _prune}[args.subcommand](args)


def _add(args: argparse.Namespace) -> int:
    from sitestack.user.kernels import add_kernel

    res = add_kernel(args.path, name=args.name, display_name=args.display_name, force=args.force)
    if args.json:
        from sitestack.output import emit_json

        emit_json(res.to_json())
        return 0
    if res.asked is not None:
        print(f"kernel name {res.name!r} (from {res.asked!r}: kernel names are [a-z0-9._-])")
    print(f"added kernel {res.name} ({res.display_name}) for {res.env}" + (" (replacing another's)" if res.replaced else ""))
    print(f"  {res.path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from sitestack.user.kernels import list_kernels

    kernels = list_kernels()
    if args.json:
        from sitestack.output import emit_json

        emit_json({"kernels": [k.to_json() for k in kernels]})
        return 0
    if not kernels:
        print("no kernels of sitestack's found (the site's come with `module load`, yours with `sitestack kernel add`)")
    for k in kernels:
        print(f"{k.name}  {k.kind}  {k.env or k.stack}  {k.display_name!r}" + (f"  PROBLEM: {k.problem}" if k.problem else ""))
    return 0


def _remove(args: argparse.Namespace) -> int:
    from sitestack.user.kernels import remove_kernel

    path = remove_kernel(args.name)
    if args.json:
        from sitestack.output import emit_json

        emit_json({"removed": str(path)})
        return 0
    print(f"removed {path}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from sitestack.user.kernels import prune

    gone = prune(dry_run=args.dry_run)
    if args.json:
        from sitestack.output import emit_json

        emit_json({"dry_run": args.dry_run, "removed": [k.to_json() for k in gone]})
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for k in gone:
        print(f"{verb} {k.name}: {k.problem}")
    if not gone:
        print("no kernel of a deleted environment")
    return 0
