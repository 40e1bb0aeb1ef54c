"""config: site settings (ROOT/.sitestack/config.json), e.g. the catalog folder."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("show or change site settings (e.g. `config catalog DIR`)", options=(
    Option("key", nargs="?", help="setting to show or change (catalog)"),
    Option("value", nargs="?", help="new value"),
    Option("--unset", action="store_true", help="remove the setting"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.errors import UsageError
    from sitestack.output import emit_json
    from sitestack.site.config import KEYS, read_config, set_config

    root = resolve_root(args.root)
    if args.unset and (args.key is None or args.value is not None):
        raise UsageError("--unset takes a KEY and no VALUE")
    if args.key is not None and args.key not in KEYS:
        raise UsageError(f"unknown setting {args.key!r}", hint="known settings: " + ", ".join(sorted(KEYS)))
    if args.unset or args.value is not None:
        if args.key == "catalog":  # stored and written at once
            from sitestack.site.catalog import configure_catalog
            from sitestack.site.registry import Site

            configure_catalog(Site(root), None if args.unset else args.value)
        else:
            set_config(root, args.key, None if args.unset else args.value)
    data = read_config(root)
    shown = {k: data.get(k) for k in ([args.key] if args.key else sorted(KEYS))}
    if args.json:
        emit_json(shown)
        return 0
    for k, v in shown.items():
        print(f"{k} = {v if v is not None else '(not set)'}    # {KEYS[k]}")
    return 0
