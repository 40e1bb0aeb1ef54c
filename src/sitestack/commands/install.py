"""sitestack install [PKG...]: add to a layer only what its stack lacks; conflicts are refused."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse
    from typing import Any


COMMAND = Command("install packages into a layer, using what its stack already has", options=(
    Option("packages", nargs="*", metavar="PKG", help="requirements, e.g. 'scikit-image' or 'foo>=2'"),
    Option("--layer", metavar="PATH", help="the layer (default: the active $VIRTUAL_ENV)"),
    Option("-r", "--requirement", action="append", default=[], metavar="FILE", dest="files",
           help="install from a requirements file (repeatable)"),
    Option("--shadow", action="append", default=[], metavar="NAME",
           help="allow this stack distribution to be installed into the layer at another version"),
    Option("--force", action="store_true", help="install even if the result fails `sitestack check`"),
    Option("--dry-run", action="store_true", help="print the plan; change nothing"),
    Option("--find-links", action="append", default=[], metavar="DIR_OR_URL",
           help="also look here (added to the stack's [user] find-links)"),
    Option("--index-url", help="package index (default: the stack's [user] index-url, then uv's)"),
    Option("--no-index", action="store_true", help="only --find-links and the stack's find-links"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.user.install import IndexOptions, install

    res = install(args.layer, args.packages, args.files, shadow=args.shadow, force=args.force,
                  dry_run=args.dry_run,
                  index=IndexOptions(tuple(args.find_links), args.index_url, args.no_index))
    if args.json:
        from sitestack.output import emit_json

        def items(xs: Any) -> list[dict[str, Any]]:
            return [{"name": i.name, "version": i.version, **({"stack": i.stack} if i.stack else {})} for i in xs]

        emit_json({"layer": str(res.layer), "stack": res.stack, "inherit": res.inherit, "dry_run": res.dry_run,
                   "requested": list(res.requested), "from_stack": items(res.from_stack),
                   "install": items(res.install), "shadow": items(res.shadow),
                   "unshadow": items(res.unshadow), "in_layer": items(res.in_layer),
                   "forced": list(res.forced)})
        return 0
    head = "plan for" if res.dry_run else "installed into" if res.changes else "nothing to do in"
    print(f"{head} {res.layer} (on {res.stack}{'' if res.inherit else ', not inheriting'})")
    rows = [("from the stack", [f"{i.name} {i.version}" for i in res.from_stack]),
            ("into the layer", [f"{i.name} {i.version}" for i in res.install]),
            ("shadowed", [f"{i.name} {i.version} (stack: {i.stack})" for i in res.shadow]),
            ("layer copy removed", [f"{i.name} {i.version} (stack: {i.stack})" for i in res.unshadow]),
            ("already in the layer", [f"{i.name} {i.version}" for i in res.in_layer])]
    for label, names in rows:
        if names or label in ("from the stack", "into the layer", "shadowed"):
            print(f"  {label + ':':<22}{', '.join(names) or '-'}")
    for msg in res.forced:
        print(f"warning: installed with --force although: {msg}")
    return 0
