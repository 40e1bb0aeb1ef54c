"""MPI plumbing of `sitestack stage`: one leader per node, and a pipelined chunked broadcast.

Test seam (documented in docs/scaling.md, test-only): SITESTACK_STAGE_NODE_MAP="0:a,1:a,2:b"
names each rank's node instead of MPI_COMM_TYPE_SHARED.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

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


# Every chunk is announced by a head: (length, exit code). Code 0: `length` bytes of data
# follow (0: the end); otherwise rank 0 could not read its source and an error message of
# `length` bytes follows.
HEAD = struct.Struct("<qq")
DEPTH = 4  # chunk buffers per rank: a node may fall this many chunks behind before it stalls the others

T = TypeVar("T")


class _End:
    pass


END = _End()


def pump(mpi: Any, comm: Any, source: Callable[[memoryview], int] | None, chunk: int,
         consume: Callable[[Iterator[memoryview]], T] | None) -> T | None:
    """Broadcast rank 0's stream over `comm` (None: no MPI) in chunks, pipelined.

    On rank 0 a reader thread fills free buffers from `source` (readinto-like: bytes put
    into the view, 0 at the end) ahead of the broadcast; on every rank `consume` runs in a
    thread of its own over the chunks as they arrive, while this thread takes part in the
    next broadcast into another buffer. So reading, sending, writing and checking overlap, and
    a node whose disk is briefly slow lags by up to DEPTH chunks before it holds up anyone.
    A chunk's view is valid until the consumer asks for the next one.

    Every rank takes part to the end even when its consumer failed (no one may hang in a
    collective). Returns what `consume` returned; raises what it raised, else the source's
    failure (StageError with its exit code).
    """
    import mmap

    root = comm is None or comm.rank == 0
    # Anonymous maps, not bytearrays: the kernel hands out zero pages as they are first
    # written, where bytearray(16 MiB) x DEPTH is memset up front (70 ms here, for a small image).
    bufs = [mmap.mmap(-1, chunk) for _ in range(DEPTH)]
    free: queue.Queue[int] = queue.Queue()
    for i in range(DEPTH):
        free.put(i)
    filled: queue.Queue[tuple[int, int, int]] = queue.Queue()
    todo: queue.Queue[tuple[int, int] | _End | BaseException] = queue.Queue()
    lock = threading.Lock()
    gone = [consume is None]  # the consumer has stopped taking chunks
    result: list[Any] = [None, None]  # value, error

    def read() -> None:
        assert source is not None
        while (i := free.get()) >= 0:
            n, code = 0, 0
            try:
                n = source(memoryview(bufs[i]))
            except (SitestackError, OSError) as e:
                # A stack that fails its own manifest while being packed is exit 6, as anywhere.
                code = e.exit_code if isinstance(e, SitestackError) else UsageError.exit_code
                msg = f"rank 0 could not read the source: {e}".encode()[:4096]
                bufs[i][:len(msg)], n = msg, len(msg)
            filled.put((i, n, code))
            if n <= 0 or code:
                return

    def chunks() -> Iterator[memoryview]:
        held = -1
        try:
            while True:
                item = todo.get()
                if held >= 0:
                    free.put(held)
                    held = -1
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                held = item[0]
                yield memoryview(bufs[held])[: item[1]]
        finally:
            if held >= 0:
                free.put(held)

    def run_consumer() -> None:
        assert consume is not None
        try:
            result[0] = consume(chunks())
        except BaseException as e:
            result[1] = e
        finally:
            with lock:  # from now on the broadcast loop frees buffers itself
                gone[0] = True
                while not todo.empty():
                    item = todo.get()
                    if isinstance(item, tuple):
                        free.put(item[0])

    def deliver(item: tuple[int, int] | _End | BaseException) -> None:
        with lock:
            if not gone[0]:
                todo.put(item)
            elif isinstance(item, tuple):
                free.put(item[0])

    threads = []
    if root and source is not None:
        threads.append(threading.Thread(target=read, name="sitestack-read", daemon=True))
    if consume is not None:
        threads.append(threading.Thread(target=run_consumer, name="sitestack-receive", daemon=True))
    for t in threads:
        t.start()
    failure: StageError | None = None
    done = False
    try:
        head = bytearray(HEAD.size)
        while True:
            if root:
                i, n, code = filled.get() if source is not None else (free.get(), 0, 0)
                HEAD.pack_into(head, 0, n, code)
            else:
                i = free.get()  # waits while the consumer holds every buffer
            if comm is not None:
                comm.Bcast([head, mpi.BYTE], root=0)
            n, code = HEAD.unpack(head)
            if code:
                msg = bytearray(bufs[i][:n]) if root else bytearray(n)
                if comm is not None:
                    comm.Bcast([msg, mpi.BYTE], root=0)
                failure = StageError(bytes(msg).decode(errors="replace"), code)
                free.put(i)
                break
            if n <= 0:
                free.put(i)
                break
            if comm is not None:
                comm.Bcast([memoryview(bufs[i])[:n], mpi.BYTE], root=0)
            deliver((i, n))
        done = True
    finally:
        deliver(failure if failure is not None else END)
        free.put(-1)  # stops a reader still waiting for a buffer
        for t in threads:
            if done or t.name == "sitestack-receive":  # a reader may be stuck in its source
                t.join()
    if result[1] is not None:
        raise result[1]
    if failure is not None:
        raise failure
    return cast(T, result[0])


def file_source(f: Any, size: int | None = None) -> Callable[[memoryview], int]:
    """A source for `pump` reading an open binary file (`size` bytes of it at most)."""
    left = [size]

    def fill(view: memoryview) -> int:
        if left[0] is not None:
            view = view[: left[0]]
        n = f.readinto(view) if len(view) else 0
        if left[0] is not None:
            left[0] -= n
        return int(n or 0)

    return fill


def iter_source(it: Iterator[bytes]) -> Callable[[memoryview], int]:
    """A source for `pump` from an iterator of byte strings of any size."""
    rest = [memoryview(b"")]

    def fill(view: memoryview) -> int:
        n = 0
        while n < len(view):
            if not len(rest[0]):
                data = next(it, b"")
                if not data:
                    break
                rest[0] = memoryview(data)
            k = min(len(view) - n, len(rest[0]))
            view[n : n + k] = rest[0][:k]
            rest[0] = rest[0][k:]
            n += k
        return n

    return fill


class ChunkReader(io.RawIOBase):
    """A readable file over the chunks `pump` hands a consumer."""

    def __init__(self, chunks: Iterator[memoryview]) -> None:
        self.chunks, self.buf, self.pos = chunks, memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self.pos >= len(self.buf):
            nxt = next(self.chunks, None)
            if nxt is None:
                return 0
            self.buf, self.pos = nxt, 0
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
