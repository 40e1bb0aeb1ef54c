"""sitestack test NAME[/VERSION] [--gpu]: rerun a published stack's smoke tests, record them."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


COMMAND = Command(
    "rerun a published stack's smoke tests (e.g. in a GPU job); results go to the site state", options=(
        Option("ref", metavar="NAME[/VERSION]"),
        Option("--gpu", action="store_true",
               help="run only the [tests.gpu] tests; exit 1 when no GPU is visible"),
        Option("--json", action="store_true"),
    ))


def run(args: argparse.Namespace) -> int:
    from sitestack.build.smoke import rerun_tests
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json

    res = rerun_tests(resolve_root(args.root), args.ref, gpu_only=args.gpu)
    if args.json:
        emit_json(res.to_json())
    else:
        for r in res.results:
            kind = "gpu " if r.get("kind") == "gpu" else ""
            print(f"{r['status']:8} {kind}{r['test']}  ({r['seconds']}s)")
            if r["status"] == "failed":
                for line in str(r["output"]).strip().splitlines()[-10:]:
                    print(f"         {line}")
        print(f"{res.stack}: {res.count('passed')} passed, {res.count('failed')} failed, "
              f"{res.count('skipped')} skipped; GPU: {res.gpu_how}; recorded in {res.record}")
        if res.gpu_only and not res.gpu:
            import sys

            print("sitestack: no GPU is visible here: the GPU tests were skipped, not passed", file=sys.stderr)
    return 0 if res.ok else 1
