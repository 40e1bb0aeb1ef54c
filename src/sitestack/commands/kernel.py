"""sitestack kernel add|list|remove|prune: a layer or clone as a Jupyter kernel of the user's.

    sitestack kernel add [PATH] [--name NAME] [--display-name TEXT] [--force] [--json]
    sitestack kernel list [--json]
    sitestack kernel remove NAME
    sitestack kernel prune [--dry-run] [--json]
"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

ACTIONS = ("add", "list", "remove", "prune")
COMMAND = Command("Jupyter kernels of your layers and clones (the site's come with its modules)", options=(
    Option("action", choices=ACTIONS, metavar="ACTION",
           help="add [PATH]: register a layer or clone (default: the active one); list: sitestack's "
                "kernels Jupyter finds, with any problem; remove NAME: one of yours; prune: yours "
                "whose layer or clone is gone"),
    Option("target", nargs="?", metavar="PATH|NAME", help="add: the layer or clone; remove: the kernel"),
    Option("--name", help="add: the kernel's name, [a-z0-9._-] (default: from the folder's name)"),
    Option("--display-name", metavar="TEXT", help="add: what Jupyter shows (default: Python X.Y (NAME on STACK))"),
    Option("--force", action="store_true", help="add: take --name from another environment's kernel of sitestack's"),
    Option("--dry-run", action="store_true", help="prune: only say which"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.errors import UsageError

    given = {"--name": args.name is not None, "--display-name": args.display_name is not None,
             "--force": args.force, "--dry-run": args.dry_run,
             "PATH|NAME": args.target is not None}
    allowed = {"add": {"--name", "--display-name", "--force", "PATH|NAME"}, "list": set(),
               "remove": {"PATH|NAME"}, "prune": {"--dry-run"}}[args.action]
    extra = [k for k, v in given.items() if v and k not in allowed]
    if extra:
        raise UsageError(f"kernel {args.action} takes no {', '.join(extra)}")
    if args.action == "remove" and args.target is None:
        raise UsageError("kernel remove needs the kernel's NAME")
    return {"add": _add, "list": _list, "remove": _remove, "prune": _prune}[args.action](args)


def _add(args: argparse.Namespace) -> int:
    from sitestack.user.kernels import add_kernel

    res = add_kernel(args.target, name=args.name, display_name=args.display_name, force=args.force)
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

    print(f"removed {remove_kernel(args.target)}")
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
