"""sitestack check PATH: broken requirements across a layer and its stack; exit 1 if any."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command("check requirements across a layer and its stack (like pip check)", options=(
    Option("path", metavar="PATH"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.output import emit_json
    from sitestack.user.check import check_layer

    res = check_layer(args.path)
    if args.json:
        emit_json(res.to_json())
    elif res.problems:
        for p in res.problems:
            print(f"{p.message()}\n  fix: {p.fix}")
    else:
        print(f"{res.layer}: no broken requirements ({res.checked} distributions on {res.stack})")
    return 0 if res.ok else 1
