"""MPI plumbing of `sitestack stage`: one leader per node, and a chunked broadcast.

Test seam (documented in docs/scaling.md, test-only): SITESTACK_STAGE_NODE_MAP="0:a,1:a,2:b"
names each rank's node instead of MPI_COMM_TYPE_SHARED.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sitestack.errors import SitestackError, StageError, ToolMissingError, UsageError

ENV_NODE_MAP = "SITESTACK_STAGE_NODE_MAP"


def _launched_ranks() -> int:
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        with contextlib.suppress(ValueError):
            if int(os.environ.get(var, "0")) > 1:
                return int(os.environ[var])
    return 1


def load_mpi(use_mpi: bool = True) -> Any:
    """mpi4py's MPI module, or None for a local stage (no mpi4py and not under mpiexec)."""
    if not use_mpi:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        if _launched_ranks() > 1:
            raise ToolMissingError("this runs under mpiexec, but mpi4py is not installed",
                                   hint="pip install 'sitestack[mpi]' (or mpi4py)") from None
        return None
    return MPI


def parse_node_map(text: str, size: int) -> dict[int, str]:
    table: dict[int, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        r, sep, name = item.partition(":")
        if not sep or not r.strip().isdigit() or not name.strip() or "/" in name:
            raise UsageError(f"{ENV_NODE_MAP}: bad entry {item!r} (want RANK:NODE)")
        table[int(r)] = name.strip()
    missing = [r for r in range(size) if r not in table]
    if missing:
        raise UsageError(f"{ENV_NODE_MAP} names no node for rank(s) {missing}")
    return table


@dataclass
class Nodes:
    name: str
    leader: bool
    leaders: Any  # communicator of node leaders (None when not a leader or without MPI)


def split_nodes(mpi: Any, world: Any) -> Nodes:
    rank = world.rank if world is not None else 0
    mapping = os.environ.get(ENV_NODE_MAP)
    if world is None:
        name = parse_node_map(mapping, 1)[0] if mapping else socket.gethostname()
        return Nodes(name, True, None)
    if mapping:
        table = parse_node_map(mapping, world.size)
        name = table[rank]
        node = world.Split(sorted(set(table.values())).index(name), rank)
    else:
        node = world.Split_type(mpi.COMM_TYPE_SHARED, key=rank)
        name = mpi.Get_processor_name()
    leader = node.rank == 0  # key=rank: world rank 0 leads its node
    node.Free()
    leaders = world.Split(0 if leader else mpi.UNDEFINED, rank)
    return Nodes(name, leader, leaders if leader else None)


class Channel:
    """Chunks from rank 0's source, broadcast over `comm` (or read directly without MPI)."""

    def __init__(self, mpi: Any, comm: Any, source: Iterator[bytes] | None) -> None:
        self.mpi, self.comm, self.source = mpi, comm, source
        self.root = comm is None or comm.rank == 0
        self.done = False
        self.bytes = 0

    def next(self) -> bytes | bytearray:
        if self.done:
            return b""
        data: bytes | bytearray = b""
        info: tuple[int, str, int] = (0, "", 0)
        if self.root:
            assert self.source is not None
            try:
                data = next(self.source, b"")
                info = (len(data), "", 0)
            except (SitestackError, OSError) as e:
                # A stack that fails its own manifest while being packed is exit 6, as anywhere.
                code = e.exit_code if isinstance(e, SitestackError) else UsageError.exit_code
                info = (-1, f"rank 0 could not read the source: {e}", code)
        if self.comm is not None:
            info = self.comm.bcast(info, root=0)
        if info[0] <= 0:
            self.done = True
            if info[0] < 0:
                raise StageError(info[1], info[2])
            return b""
        if self.comm is not None:
            buf = bytearray(data) if self.root else bytearray(info[0])
            self.comm.Bcast([buf, self.mpi.BYTE], root=0)
            data = buf
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        """Keep taking part in the broadcast after a local failure, so no one hangs."""
        with contextlib.suppress(SitestackError):
            while self.next():
                pass


class ChannelReader(io.RawIOBase):
    def __init__(self, ch: Channel) -> None:
        self.ch, self.buf, self.pos = ch, memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.pos >= len(self.buf):
            self.buf, self.pos = memoryview(self.ch.next()), 0
            if not len(self.buf):
                return 0
        n = min(len(b), len(self.buf) - self.pos)
        b[:n] = self.buf[self.pos : self.pos + n]
        self.pos += n
        return n


def idle_barrier(world: Any) -> None:
    """Barrier that sleeps instead of spinning: waiting ranks must not take CPU from the
    leader on their node (nor from rank 0 reading the shared filesystem)."""
    req = world.Ibarrier()
    delay = 0.001
    while not req.Test():
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
