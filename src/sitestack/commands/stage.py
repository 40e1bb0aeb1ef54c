"""sitestack stage TARGET --to DIR: node-local copies under mpiexec (scale.stage.stage)."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse


def _mount_mode(value: str) -> str:
    import argparse

    if value not in ("yes", "auto"):
        raise argparse.ArgumentTypeError(f"{value!r}: give --mount or --mount=auto (TARGET goes "
                                         "before --mount)")
    return value


COMMAND = Command("copy a stack (and a layer) to node-local disk under mpiexec", options=(
    Option("target", metavar="TARGET", nargs="?",
           help="NAME[/VERSION], a clone path or a layer path (or give --archive)"),
    Option("--layer", help="a layer (venv) to stage together with the stack"),
    Option("--to", required=True, help="node-local folder, e.g. /local/scratch"),
    Option("--archive", help="a file made by `sitestack pack` (rank 0 reads it)"),
    Option("--chunk-size", type=int, help="broadcast chunk in bytes (default 16 MiB)"),
    Option("--mount", nargs="?", const="yes", type=_mount_mode,
           help="mount one verified squashfs image per node instead of extracting the files; "
                "--mount=auto extracts the image where it cannot be mounted (no squashfuse)"),
    Option("--no-mpi", action="store_true", help="stage on this node only, without MPI"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    import sys

    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json
    from sitestack.scale.stage import stage

    res = stage(args.target, to=args.to, root=resolve_root(args.root), layer=args.layer,
                archive=args.archive, chunk=args.chunk_size, use_mpi=not args.no_mpi, mount=args.mount)
    if args.json:
        emit_json(res.to_json())
    else:
        print(res.activate)
        if res.rank == 0:
            staged = sum(n.status == "staged" for n in res.nodes)
            mounted = sum(n.how not in ("", "extracted") for n in res.nodes)
            print(f"sitestack: {res.id} ready on {len(res.nodes)} node(s) ({staged} staged, "
                  f"{len(res.nodes) - staged} reused{f', {mounted} mounted' if mounted else ''}) "
                  f"in {res.seconds:.1f}s; run: source {res.activate}", file=sys.stderr)
    return 0
