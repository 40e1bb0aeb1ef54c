"""sitestack show NAME[/VERSION]: one stack's python, packages, spec and module path."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("show one stack: python, packages, spec, module path", options=(
    Option("ref", metavar="NAME[/VERSION]"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json, table
    from sitestack.site.inventory import show

    d = show(resolve_root(args.root), args.ref)
    if args.json:
        emit_json(d.to_json())
        return 0
    rec = d.record
    print(f"{rec.ref}  (Python {rec.python}, {rec.kind})")
    for key, value in (("prefix", rec.prefix), ("built", rec.built), ("description", rec.description),
                       ("user_base", d.user_base), ("default", d.default), ("hidden", d.hidden),
                       ("deprecated", d.deprecated)):
        if value not in ("", None, False):
            print(f"  {key}: {value}")
    print(f"  module: module use {d.lmod_dir}; module load {rec.ref}")
    table(["package", "version"], sorted(rec.packages.items()))
    print("spec:\n" + "\n".join("  " + ln for ln in d.spec.splitlines()))
    return 0
