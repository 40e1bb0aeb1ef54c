"""catalog: write the static catalog site (index, a page per version, diffs, catalog.json)."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("write a static web catalog of every stack version", options=(
    Option("--out", "-o", metavar="DIR",
           help="folder to write (replaced as a whole); default: the configured `sitestack config catalog`"),
    Option("--json", action="store_true", help="print what was written as JSON"),
))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sitestack.core.layout import resolve_root
    from sitestack.errors import UsageError
    from sitestack.output import emit_json
    from sitestack.site.catalog import build_catalog
    from sitestack.site.config import catalog_dir
    from sitestack.site.registry import Site

    site = Site(resolve_root(args.root))
    out = Path(args.out) if args.out else catalog_dir(site.root)
    if out is None:
        raise UsageError("give --out DIR", hint="or set it once: sitestack config catalog DIR")
    res = build_catalog(site, out)
    if args.json:
        emit_json({"out": str(res.out), "versions": res.versions, "pages": res.pages,
                   "index": str(res.out / "index.html"), "catalog_json": str(res.out / "catalog.json")})
        return 0
    print(f"wrote {res.pages} pages for {res.versions} stack version(s) to {res.out}")
    print(f"  open {res.out / 'index.html'}")
    return 0
