from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("build", help="build, smoke-test and publish a stack from a spec")
    p.add_argument("spec", help="stack spec (TOML)")
    p.add_argument("--version", dest="stack_version", help="version to publish (default: today, YYYY-MM-DD)")
    p.add_argument("--default", action="store_true", help="make it the default version")
    p.add_argument("--from-lock", help="rebuild exactly the set in a lock file: .sitestack/conda.lock or .sitestack/lock.txt")
    p.add_argument("--no-wait", action="store_true", help="refuse instead of waiting when another build of this name runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


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
