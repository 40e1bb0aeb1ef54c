"""The MPI choreography of `sitestack stage`: who reads, who receives, one exit code for all.

Rank 0 alone reads the shared filesystem (source.py: an archive, an image, or the stack
packed on the fly) and broadcasts it in chunks, pipelined, to one leader per node
(mpibcast.py). What a leader does with the bytes (its lock, its checks, the extraction or the
image's checks and mount) is node.py's.
The leaders' results are gathered on every rank, so every rank exits with the same code and
prints the same activate path.

Test seam (documented in docs/scaling.md, test-only): SITESTACK_STAGE_NODE_MAP="0:a,1:a,2:b"
names each rank's node instead of MPI_COMM_TYPE_SHARED; `{node}` in --to becomes that name.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sitestack.core.layout import SiteRoot
from sitestack.errors import ConflictError, SitestackError, StageError, UsageError
from sitestack.scale.image import Image
from sitestack.scale.mpibcast import Nodes, idle_barrier, load_mpi, pump, split_nodes
from sitestack.scale.node import NodeCopy, NodeResult
from sitestack.scale.node import failure as failure_of
from sitestack.scale.pack import Header
from sitestack.scale.source import open_source
from sitestack.scale.staged import base_dir, check_to

DEFAULT_CHUNK = 16 << 20  # DEPTH of these per rank; far below MPI's 2 GiB count limit
MOUNT_MODES = ("yes", "auto")


@dataclass(frozen=True)
class StageResult:
    id: str
    activate: str
    path: str
    node: str
    status: str  # this rank's node: "staged" | "reused"
    how: str  # this rank's node: "extracted" | "kernel" | "helper" | "squashfuse_ll" | "squashfuse"
    nodes: tuple[NodeResult, ...]
    ranks: int
    bytes: int
    files: int
    seconds: float
    rank: int = 0  # this process's MPI rank: rank 0 prints the job's summary

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["rank"]  # which rank renders the text, not part of the job's result (same JSON on every rank)
        d["nodes"] = [asdict(n) for n in self.nodes]
        return d


def _lead(mpi: Any, nodes: Nodes, to: str, header: Header, image: Image | None,
          fill: Callable[[memoryview], int] | None, chunk: int, mount: str | None,
          helper: str | None) -> NodeResult:
    """This node leader's part: prepare, take part in the broadcast while it is needed, finish."""
    copy = NodeCopy(nodes.name, to, header, image, mount, helper)
    failure: NodeResult | None = None
    need = False
    try:
        need = copy.prepare()
    except Exception as e:
        failure = failure_of(nodes.name, copy.final, e)
    with copy:
        comm = nodes.leaders
        is_root = comm is None or comm.rank == 0
        if comm is None and not need:
            return failure or copy.result("reused")
        if comm is not None:  # only leaders that need the bytes (and rank 0) take part
            if not comm.allreduce(1 if need else 0):
                return failure or copy.result("reused")
            comm = comm.Split(0 if need or is_root else mpi.UNDEFINED, comm.rank)
            if comm == mpi.COMM_NULL:
                return failure or copy.result("reused")
        try:
            if not need:  # rank 0, which only sends: a failure to read is the receivers' to report
                with contextlib.suppress(StageError):
                    pump(mpi, comm, fill, chunk, None)
                return failure or copy.result("reused")
            pump(mpi, comm, fill if is_root else None, chunk, copy.receive)
            return copy.finish()
        except Exception as e:
            return failure_of(nodes.name, copy.final, e)
        finally:
            if comm is not None and comm is not nodes.leaders:
                comm.Free()


def _site_helper(root: SiteRoot) -> str | None:
    """The site's setuid mount helper (`sitestack config stage_mount_helper PATH`), if any."""
    from sitestack.site.config import mount_helper

    try:
        return mount_helper(root)
    except SitestackError:
        return None


def stage(target: str | None, *, to: str, root: SiteRoot, layer: str | None = None,
          archive: str | None = None, chunk: int | None = None, use_mpi: bool = True,
          quiet: bool = False, mount: str | None = None) -> StageResult:
    """`sitestack stage`: every node gets one verified copy; the result of this rank.
    `mount` "yes" mounts an image on every node, "auto" extracts it where it cannot be mounted."""
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    if not 0 < chunk < (1 << 31):
        raise UsageError("--chunk-size must be between 1 byte and 2 GiB")
    if mount is not None and mount not in MOUNT_MODES:
        raise UsageError(f"--mount={mount}: give --mount or --mount=auto")
    mpi = load_mpi(use_mpi)
    try:
        return _stage(mpi, target, to, root, layer, archive, chunk, quiet, mount)
    except SitestackError:
        raise
    except BaseException:
        # A bug on one rank would leave the others waiting in a collective: end the job.
        if mpi is not None and mpi.COMM_WORLD.size > 1:
            import traceback

            traceback.print_exc()
            mpi.COMM_WORLD.Abort(1)
        raise


def _stage(mpi: Any, target: str | None, to: str, root: SiteRoot, layer: str | None,
           archive: str | None, chunk: int, quiet: bool, mount: str | None) -> StageResult:
    t0 = time.monotonic()
    check_to(to)
    if mount and "{node}" in to:
        raise UsageError("--mount needs one --to path on every node ({node} is for extraction)",
                         hint="an image is relocated for the one path it is mounted at")
    world = mpi.COMM_WORLD if mpi is not None else None
    rank = world.rank if world is not None else 0
    with contextlib.ExitStack() as stack:
        msg: tuple[Any, ...] = ()
        fill = None
        if rank == 0:
            try:
                src = open_source(target, layer=layer, archive=archive, root=root, chunk=chunk,
                                  mount=mount, to=to, stack=stack)
                fill = src.fill
                msg = ("ok", src.header.to_json(), src.image.to_json() if src.image else None,
                       _site_helper(root))
            except SitestackError as e:
                msg = ("error", e.exit_code, str(e), e.hint)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):  # making an image on the fly
                    msg = ("error", ConflictError.exit_code, f"rank 0: disk full: {e.strerror} "
                           f"({e.filename or to})", None)
                else:
                    msg = ("error", UsageError.exit_code, f"cannot read {e.filename or target}: "
                           f"{e.strerror}", None)
        if world is not None:
            idle_barrier(world)  # rank 0 may be making an image: the others sleep meanwhile
            msg = world.bcast(msg, root=0)
        if msg[0] == "error":
            raise StageError(msg[2], msg[1], msg[3])
        header = Header.from_json(msg[1])
        image = Image.from_json(msg[2]) if msg[2] is not None else None
        nodes = split_nodes(mpi, world)
        if rank == 0 and not quiet:
            print(f"sitestack: staging {header.name}/{header.version} ({header.kind}, {header.files} "
                  f"files, {header.bytes >> 20} MiB) to {to}"
                  f"{' as a squashfs image' if image else ''}", file=sys.stderr, flush=True)
        mine = (_lead(mpi, nodes, to, header, image, fill, chunk, mount, msg[3])
                if nodes.leader else None)
        if world is not None:
            idle_barrier(world)
        results = world.allgather(mine) if world is not None else [mine]
    done = tuple(r for r in results if r is not None)
    failed = [r for r in done if r.status == "failed"]
    if failed:
        what = "; ".join(f"node {r.node} (host {r.host}): {r.error}" for r in failed)
        raise StageError(f"staging failed on {len(failed)} of {len(done)} node(s): {what}",
                         failed[0].code)
    noted = [r.node for r in done if r.note]
    if noted and rank == 0 and not quiet:
        print(f"sitestack: note: {len(noted)} of {len(done)} node(s) cannot mount the image "
              f"(no squashfuse_ll or squashfuse; Debian package squashfuse): extracted it there "
              f"instead ({', '.join(noted[:8])}{' ...' if len(noted) > 8 else ''})",
              file=sys.stderr, flush=True)
    final = base_dir(to, nodes.name) / header.dirname
    here = next((r for r in done if r.node == nodes.name), None)
    return StageResult(header.dirname, str(final / "activate"), str(final), nodes.name,
                       here.status if here else "staged", here.how if here else "", done,
                       world.size if world is not None else 1, header.bytes, header.files,
                       round(time.monotonic() - t0, 3), rank)
