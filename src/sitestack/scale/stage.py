"""The MPI choreography of `sitestack stage`: who reads, who receives, one exit code for all.

Rank 0 alone reads the shared filesystem (the stack, or a packed archive) and broadcasts
the archive in chunks to one leader per node (mpibcast.py). What a leader does with the bytes
(its lock, its checks, the extraction and relocation, the rename into place) is node.py's.
The leaders' results are gathered on every rank, so every rank exits with the same code and
prints the same activate path.

Test seam (documented in docs/scaling.md, test-only): SITESTACK_STAGE_NODE_MAP="0:a,1:a,2:b"
names each rank's node instead of MPI_COMM_TYPE_SHARED; `{node}` in --to becomes that name.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sitestack.core.fsutil import rmtree
from sitestack.core.layout import SiteRoot
from sitestack.core.publish import make_temp, publish
from sitestack.errors import SitestackError, StageError, UsageError, VerifyError
from sitestack.scale.members import read_header
from sitestack.scale.mpibcast import Channel, Nodes, idle_barrier, load_mpi, split_nodes
from sitestack.scale.node import NodeResult, base_dir, extract, finish_copy, prepare
from sitestack.scale.node import failure as failure_of
from sitestack.scale.pack import Header, stream_chunks

DEFAULT_CHUNK = 64 << 20  # far below MPI's 2 GiB count limit, and bounded memory per rank


@dataclass(frozen=True)
class StageResult:
    id: str
    activate: str
    path: str
    node: str
    status: str  # this rank's node: "staged" | "reused"
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


def _lead(mpi: Any, nodes: Nodes, to: str, header: Header, fmt: str,
          source: Iterator[bytes] | None, archive_bytes: int) -> NodeResult:
    host = socket.gethostname()
    final = base_dir(to, nodes.name) / header.dirname
    state, lock = "failed", contextlib.ExitStack()
    failure: NodeResult | None = None
    try:
        state, final, lock = prepare(nodes.name, to, header, archive_bytes if fmt == "squashfs" else 0)
    except Exception as e:
        failure = failure_of(nodes.name, final, e)
    with lock:
        comm = nodes.leaders
        is_root = comm is None or comm.rank == 0
        if comm is None and state != "need":
            return failure or NodeResult(nodes.name, host, "reused", str(final))
        if comm is not None:  # only leaders that need the bytes (and rank 0) take part
            if not comm.allreduce(1 if state == "need" else 0):
                return failure or NodeResult(nodes.name, host, "reused", str(final))
            comm = comm.Split(0 if state == "need" or is_root else mpi.UNDEFINED, comm.rank)
            if comm == mpi.COMM_NULL:
                return failure or NodeResult(nodes.name, host, "reused", str(final))
        ch = Channel(mpi, comm, source if is_root else None)
        try:
            if state != "need":
                return failure or NodeResult(nodes.name, host, "reused", str(final))
            tmp = make_temp(final.parent, f".tmp-{header.dirname}-", 0o700)
            try:
                u = extract(ch, fmt, tmp)
                if u.header.content_hash != header.content_hash:
                    raise VerifyError("archive content does not match its header")
                finish_copy(tmp, final, u)
                publish(tmp, final)
            except BaseException:
                rmtree(tmp)
                raise
            return NodeResult(nodes.name, host, "staged", str(final))
        except Exception as e:
            return failure_of(nodes.name, final, e)
        finally:
            ch.drain()
            if comm is not None and comm is not nodes.leaders:
                comm.Free()


# --- the whole job ----------------------------------------------------------------------------

def _prepare_source(target: str | None, layer: str | None, archive: str | None, root: SiteRoot,
                    chunk: int) -> tuple[Header, str, Iterator[bytes], int]:
    if archive:
        path = Path(archive)
        if not path.is_file():
            raise UsageError(f"archive {archive} does not exist")
        fmt, header = read_header(path)
        if target:
            _check_archive_holds(target, layer, header, path, root)
        size = path.stat().st_size

        def read() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while data := f.read(chunk):
                    yield data

        return header, fmt, read(), size
    if not target:
        raise UsageError("give a TARGET (stack, clone or layer) or --archive")
    if not layer and (published := _published_archive(target, root)) is not None:
        return _prepare_source(None, None, str(published), root, chunk)
    header, chunks = stream_chunks(target, root, layer, chunk)
    return header, "tar.zst", chunks, 0


def _check_archive_holds(target: str, layer: str | None, header: Header, path: Path,
                         root: SiteRoot) -> None:
    """TARGET with --archive: the archive must hold exactly TARGET (and --layer), as built.

    Staging something else under the name the job asked for would run other code than the
    job script says; so it is refused, not just reported (docs/security.md)."""
    from sitestack.scale.pack import resolve

    expected, _parts = resolve(target, root, layer)
    if header.content_hash != expected.content_hash:
        raise UsageError(
            f"archive {path} holds {header.name}/{header.version} ({header.short_hash}), not "
            f"{expected.name}/{expected.version} ({expected.short_hash}) as built",
            hint="give only --archive to stage what it holds, or pack TARGET again")


def _check_to(to: str) -> None:
    """Relocation writes the staged path into Python sources (sysconfigdata, scripts) as a
    string literal: a quote or a backslash there would end or bend it. The shell is no limit
    (activate quotes every path), so `$()`, backticks and spaces are fine."""
    bad = sorted({c for c in to if c in "'\"\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise UsageError(f"--to {to!r} contains {' '.join(repr(c) for c in bad)}, which relocated "
                         "Python files cannot carry", hint="stage to a folder without quotes, "
                         "backslashes or control characters")


def _published_archive(target: str, root: SiteRoot) -> Path | None:
    """The stack's archive from `pack --publish`, if it holds exactly this stack.

    One large file instead of thousands of small ones: on a parallel filesystem that is the
    difference between one metadata operation and ten thousand. The archive counts only if
    its content hash is the stack's own (every file is verified against it when extracted).
    """
    from sitestack.scale.pack import resolve
    from sitestack.site.registry import Site

    if target.startswith(("/", ".", "~")):
        return None
    try:
        rec = Site(root).get(target)
    except SitestackError:
        return None
    path = root.archive(rec.name, rec.version)
    if not path.is_file():
        return None
    _fmt, header = read_header(path)
    expected, _parts = resolve(rec.ref, root)
    if header.content_hash != expected.content_hash:
        print(f"sitestack: ignoring {path}: it does not hold {rec.ref} as built", file=sys.stderr)
        return None
    print(f"sitestack: reading the published archive {path}", file=sys.stderr)
    return path


def stage(target: str | None, *, to: str, root: SiteRoot, layer: str | None = None,
          archive: str | None = None, chunk: int | None = None, use_mpi: bool = True,
          quiet: bool = False) -> StageResult:
    """`sitestack stage`: every node gets one verified copy; the result of this rank."""
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    if not 0 < chunk < (1 << 31):
        raise UsageError("--chunk-size must be between 1 byte and 2 GiB")
    mpi = load_mpi(use_mpi)
    try:
        return _stage(mpi, target, to, root, layer, archive, chunk, quiet)
    except SitestackError:
        raise
    except BaseException:
        # A bug on one rank would leave the others waiting in a collective: end the job.
        if mpi is not None and mpi.COMM_WORLD.size > 1:
            import traceback

            traceback.print_exc()
            mpi.COMM_WORLD.Abort(1)
        raise


def _stage(mpi: Any, target: str | None, to: str, root: SiteRoot, layer: str | None, archive: str | None,
           chunk: int, quiet: bool) -> StageResult:
    t0 = time.monotonic()
    _check_to(to)
    world = mpi.COMM_WORLD if mpi is not None else None
    rank = world.rank if world is not None else 0
    msg: tuple[Any, ...] = ()
    source: Iterator[bytes] | None = None
    if rank == 0:
        try:
            header, fmt, source, size = _prepare_source(target, layer, archive, root, chunk)
            msg = ("ok", header.to_json(), fmt, size)
        except SitestackError as e:
            msg = ("error", e.exit_code, str(e), e.hint)
        except OSError as e:
            msg = ("error", UsageError.exit_code, f"cannot read {e.filename or target}: {e.strerror}", None)
    if world is not None:
        msg = world.bcast(msg, root=0)
    if msg[0] == "error":
        raise StageError(msg[2], msg[1], msg[3])
    header, fmt, size = Header.from_json(msg[1]), msg[2], msg[3]
    nodes = split_nodes(mpi, world)
    if rank == 0 and not quiet:
        print(f"sitestack: staging {header.name}/{header.version} ({header.kind}, {header.files} "
              f"files, {header.bytes >> 20} MiB) to {to}", file=sys.stderr, flush=True)
    mine = _lead(mpi, nodes, to, header, fmt, source, size) if nodes.leader else None
    if world is not None:
        idle_barrier(world)
    results = world.allgather(mine) if world is not None else [mine]
    done = tuple(r for r in results if r is not None)
    failed = [r for r in done if r.status == "failed"]
    if failed:
        what = "; ".join(f"node {r.node} (host {r.host}): {r.error}" for r in failed)
        raise StageError(f"staging failed on {len(failed)} of {len(done)} node(s): {what}",
                         failed[0].code)
    final = base_dir(to, nodes.name) / header.dirname
    status = next((r.status for r in done if r.node == nodes.name), "staged")
    return StageResult(header.dirname, str(final / "activate"), str(final), nodes.name, status,
                       done, world.size if world is not None else 1, header.bytes, header.files,
                       round(time.monotonic() - t0, 3), rank)


