"""sitestack clone [NAME[/VERSION]] --prefix PATH: a writable, relocated copy of a stack."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.core.copytree import MODES  # run() imports copytree anyway
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse
    from typing import Any

# quick: the clone's own time is benchmarked against `cp -al`, and argparse is a tenth of it.
COMMAND = Command(
    "a writable, relocated copy of a stack, in seconds", quick=True,
    description="Clone a stack into a writable prefix with its own interpreter. "
    "Modes: reflink (copy-on-write), hardlink (same filesystem, files you may link), "
    "copy (parallel kernel copy), thin (symlinks into the stack; depends on it), "
    "auto (reflink, then hardlink, then copy).",
    options=(
        Option("ref", nargs="?", metavar="NAME[/VERSION]",
               help="the stack to clone (default: the loaded one, $SITESTACK_PREFIX)"),
        Option("--prefix", required=True, help="where the clone goes (must not exist)"),
        Option("--mode", default="auto", choices=list(MODES)),
        Option("--jobs", "-j", type=int, help="parallel workers (default: one per core, at most 8)"),
        Option("--force", action="store_true", help="replace an earlier clone (or modulefile) at the same path"),
        Option("--module", nargs="?", const="", metavar="NAME",
               help="also write personal modulefiles NAME (default: the folder name) to --module-dir"),
        Option("--module-dir", help="where --module writes (default: ~/privatemodules)"),
        Option("--json", action="store_true"),
    ),
)


def run(args: argparse.Namespace) -> int:
    import signal
    import sys
    from pathlib import Path

    from sitestack.errors import UsageError
    from sitestack.output import emit_json, human_bytes
    from sitestack.site.registry import Site
    from sitestack.user.clone import clone, resolve_source

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    site = None
    if args.ref:
        from sitestack.core.layout import resolve_root

        site = Site(resolve_root(args.root))
    rec = resolve_source(site, args.ref)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so the temp folder is removed, as on Ctrl-C

    signal.signal(signal.SIGTERM, on_term)
    kw: dict[str, Any] = dict(mode=args.mode, jobs=args.jobs, force=args.force, module=args.module,
                              module_dir=Path(args.module_dir) if args.module_dir else None)
    if sys.stderr.isatty() and not args.json:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn(f"cloning {rec.ref}"), BarColumn(), DownloadColumn(),
                      TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("clone", total=None)
            result = clone(rec, args.prefix,
                           on_plan=lambda files, nbytes: bar.update(task, total=nbytes),
                           progress=lambda files, nbytes: bar.advance(task, nbytes), **kw)
    else:
        result = clone(rec, args.prefix, **kw)
    if args.json:
        emit_json(result.to_json())
        return 0
    for why in result.fallback:
        print(f"note: {why}", file=sys.stderr)
    if result.binaries:
        print("note: binaries that embed the stack's prefix (left as they are): "
              + ", ".join(result.binaries[:10]), file=sys.stderr)
    print(f"cloned {result.source} to {result.prefix}: mode {result.mode}, {result.files} files, "
          f"{result.bytes} bytes ({human_bytes(result.bytes)}), {result.seconds:.2f} s")
    print(f"use it: source {result.activate}")
    if result.modulefiles:
        print(f"   or: module use {result.modulefiles[0].parent}; "
              f"module load {args.module or result.prefix.name}")
    return 0
