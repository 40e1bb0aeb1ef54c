from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("stage", help="copy a stack (and a layer) to node-local disk under mpiexec")
    p.add_argument("target", metavar="TARGET", nargs="?",
                   help="NAME[/VERSION], a clone path or a layer path (or give --archive)")
    p.add_argument("--layer", help="a layer (venv) to stage together with the stack")
    p.add_argument("--to", required=True, help="node-local folder, e.g. /local/scratch")
    p.add_argument("--archive", help="a file made by `sitestack pack` (rank 0 reads it)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="broadcast chunk in bytes (default 64 MiB)")
    p.add_argument("--no-mpi", action="store_true", help="stage on this node only, without MPI")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from sitestack.core.layout import resolve_root
    from sitestack.errors import SitestackError, UsageError
    from sitestack.output import emit_json
    from sitestack.scale.mpibcast import load_mpi
    from sitestack.scale.stage import DEFAULT_CHUNK, stage

    chunk = DEFAULT_CHUNK if args.chunk_size is None else args.chunk_size
    if not 0 < chunk < (1 << 31):
        raise UsageError("--chunk-size must be between 1 byte and 2 GiB")
    mpi = load_mpi(not args.no_mpi)
    try:
        res = stage(args.target, to=args.to, root=resolve_root(args.root), layer=args.layer,
                    archive=args.archive, chunk=chunk, use_mpi=mpi is not None)
    except SitestackError:
        raise
    except BaseException:
        # A bug on one rank would leave the others waiting in a collective: end the job.
        if mpi is not None and mpi.COMM_WORLD.size > 1:
            import traceback

            traceback.print_exc()
            mpi.COMM_WORLD.Abort(1)
        raise
    if args.json:
        emit_json(res.to_json())
    else:
        print(res.activate)
        if mpi is None or mpi.COMM_WORLD.rank == 0:
            staged = sum(n.status == "staged" for n in res.nodes)
            print(f"sitestack: {res.id} ready on {len(res.nodes)} node(s) ({staged} staged, "
                  f"{len(res.nodes) - staged} reused) in {res.seconds:.1f}s; "
                  f"run: source {res.activate}", file=sys.stderr)
    return 0
