from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("show", help="show one stack: python, packages, spec, module path")
    p.add_argument("ref", metavar="NAME[/VERSION]")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.core.records import SPEC
    from sitestack.output import emit_json, table
    from sitestack.site.registry import Site

    site = Site(resolve_root(args.root))
    rec = site.get(args.ref)
    vs = site.version_state(rec)
    spec = (rec.records / SPEC).read_text(encoding="utf-8")
    data = {
        "name": rec.name, "version": rec.version, "python": rec.python, "kind": rec.kind,
        "prefix": str(rec.prefix), "built": rec.built, "description": rec.description,
        "packages": rec.packages, "spec": spec,
        "modulefiles": {"lmod": str(site.root.lmod_dir / rec.name / f"{rec.version}.lua"),
                        "tcl": str(site.root.tcl_dir / rec.name / rec.version)},
        "modulepath": {"lmod": str(site.root.lmod_dir), "tcl": str(site.root.tcl_dir)},
        "user_base": f"$HOME/.local/{rec.site}/{rec.name}/{rec.version}",
        "default": site.default_version(rec.name) == rec.version, "hidden": vs.hidden,
        "deprecated": vs.deprecated,
    }
    if args.json:
        emit_json(data)
        return 0
    print(f"{rec.ref}  (Python {rec.python}, {rec.kind})")
    for key in ("prefix", "built", "description", "user_base", "default", "hidden", "deprecated"):
        if data[key] not in ("", None, False):
            print(f"  {key}: {data[key]}")
    print(f"  module: module use {site.root.lmod_dir}; module load {rec.ref}")
    table(["package", "version"], sorted(rec.packages.items()))
    print("spec:\n" + "\n".join("  " + ln for ln in spec.splitlines()))
    return 0
