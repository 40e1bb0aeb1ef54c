"""default / deprecate / undeprecate / hide / unhide: the site's mutable state."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("default", help="make NAME/VERSION what `module load NAME` picks")
    p.add_argument("ref", metavar="NAME/VERSION")
    p.set_defaults(func=run, action="default")
    p = sub.add_parser("deprecate", help="`module load` of NAME/VERSION prints a message")
    p.add_argument("ref", metavar="NAME/VERSION")
    p.add_argument("--message", "-m", required=True)
    p.set_defaults(func=run, action="deprecate")
    p = sub.add_parser("undeprecate", help="remove a deprecation")
    p.add_argument("ref", metavar="NAME/VERSION")
    p.set_defaults(func=run, action="undeprecate")
    for name, helptext in (("hide", "hide from `module avail` (still loadable by full name)"),
                           ("unhide", "show in `module avail` again")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("ref", metavar="NAME/VERSION")
        p.set_defaults(func=run, action=name)


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site

    site = Site(resolve_root(args.root))
    act = args.action
    if act == "default":
        rec = site.set_default(args.ref)
        print(f"{rec.name}: default is now {rec.version}")
    elif act == "deprecate":
        rec = site.deprecate(args.ref, args.message)
        print(f"{rec.ref} is deprecated")
    elif act == "undeprecate":
        rec = site.undeprecate(args.ref)
        print(f"{rec.ref} is no longer deprecated")
    else:
        rec = site.hide(args.ref, hidden=act == "hide")
        print(f"{rec.ref} is {'hidden' if act == 'hide' else 'visible'}")
    return 0
