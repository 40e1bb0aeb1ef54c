"""sitestack kernel add|list|remove|prune: a layer or clone as a Jupyter kernel of the user's."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("kernel", help="Jupyter kernels of your layers and clones (the site's come with its modules)")
    ks = p.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    a = ks.add_parser("add", help="register a layer or clone as a kernel (default: the active one)")
    a.add_argument("path", metavar="PATH", nargs="?", help="the layer or clone (default: $VIRTUAL_ENV, then $SITESTACK_CLONE)")
    a.add_argument("--name", help="the kernel's name, [a-z0-9._-] (default: from the folder's name)")
    a.add_argument("--display-name", metavar="TEXT", help="what Jupyter shows (default: Python X.Y (NAME on STACK))")
    a.add_argument("--force", action="store_true", help="take --name from another environment's kernel of sitestack's")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_add)
    ls = ks.add_parser("list", help="sitestack's kernels that Jupyter finds (the site's and yours), with any problem")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    rm = ks.add_parser("remove", help="remove one of your kernels that sitestack wrote")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=run_remove)
    pr = ks.add_parser("prune", help="remove your kernels whose layer or clone is gone")
    pr.add_argument("--dry-run", action="store_true", help="only say which")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=run_prune)


def run_add(args: argparse.Namespace) -> int:
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


def run_list(args: argparse.Namespace) -> int:
    from sitestack.user.kernels import list_kernels

    kernels = list_kernels()
    if args.json:
        from sitestack.output import emit_json

        emit_json({"kernels": [k.to_json() for k in kernels]})
        return 0
    if not kernels:
        print("no kernels of sitestack's found (the site's come with `module load`, yours with `sitestack kernel add`)")
    for k in kernels:
        where = k.env or k.stack
        print(f"{k.name}  {k.kind}  {where}  {k.display_name!r}" + (f"  PROBLEM: {k.problem}" if k.problem else ""))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from sitestack.user.kernels import remove_kernel

    print(f"removed {remove_kernel(args.name)}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
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
