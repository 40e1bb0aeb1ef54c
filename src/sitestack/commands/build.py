"""sitestack build SPEC: build, smoke-test and publish a stack version (build.stack.build)."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("build, smoke-test and publish a stack from a spec", options=(
    Option("spec", help="stack spec (TOML)"),
    Option("--version", dest="stack_version", help="version to publish (default: today, YYYY-MM-DD)"),
    Option("--default", action="store_true", help="make it the default version"),
    Option("--from-lock", help="rebuild exactly the set in a lock file: .sitestack/conda.lock or .sitestack/lock.txt"),
    Option("--no-wait", action="store_true", help="refuse instead of waiting when another build of this name runs"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from sitestack.build.stack import build
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json, human_bytes
    from sitestack.site.spec import load_spec

    spec = load_spec(args.spec)
    res = build(spec, resolve_root(args.root), version=args.stack_version, make_default=args.default,
                lock_timeout=0 if args.no_wait else -1,
                from_lock=Path(args.from_lock) if args.from_lock else None)
    if args.json:
        emit_json(asdict(res))
    else:
        print(f"published {res.name}/{res.version} at {res.prefix}: Python {res.python}, "
              f"{len(res.packages)} packages, {res.files} files, {human_bytes(res.bytes)}, "
              f"{res.seconds:.1f}s" + (" (default)" if res.default else ""))
    return 0
