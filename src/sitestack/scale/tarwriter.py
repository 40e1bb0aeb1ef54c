"""The writer of the tar stream `sitestack pack` produces (tarstream.py reads it back).

POSIX ustar headers, each preceded by a pax 'x' header only for what ustar cannot hold;
headers are built here, not by tarfile, whose header code was most of a pack's CPU time.
Every file is checked against its manifest entry (size and sha256) as it is read, before
anything past it is written, so a tampered tree is never packed silently. Files are read
by the writer's thread, or ahead of it by a few threads where reads are slow (_read_ahead);
the output is written by a thread of its own (_Feeder).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TypeVar

from sitestack.core.manifest import FileEntry, Manifest
from sitestack.errors import VerifyError

FEED_DEPTH = 8  # MiB-sized pieces queued for the compressor at most
READ_AHEAD_JOBS = 8  # at most this many threads read files while packing
READ_AHEAD_BYTES = 64 << 20  # read but not yet written, at most
READ_AHEAD_FILE = 8 << 20  # larger files are streamed by the writer itself
READ_BATCH = 64  # files handed to a reading thread at once
READ_BATCH_BYTES = 4 << 20
SLOW_READ = 300e-6  # seconds per small file above which reads go to a pool (page cache: ~25 us)
READ_BANDWIDTH = 200 << 20  # bytes/s below which a batch counts as slow too
STREAM_PIECE = 4 << 20  # a streamed file is read this much at a time
BLOCK = 512  # tar block
_ZEROS = bytes(BLOCK)
REGTYPE, DIRTYPE, SYMTYPE = b"0", b"5", b"2"
T = TypeVar("T")


def write_tar(out: IO[bytes], meta: list[tuple[str, bytes]],
              trees: list[tuple[str, str, Manifest]]) -> None:
    """Stream an uncompressed tar into `out`: the `meta` blobs (name, data) first, then for
    each (role, source folder, manifest) the manifest's folders, symlinks and files under
    `role/`, each sorted (the order is deterministic). A file whose size or sha256 differs
    from its manifest entry raises VerifyError."""
    feed = _Feeder(out)
    try:
        _write_tar(_TarOut(feed), meta, trees)  # type: ignore[arg-type]
    except BaseException:
        feed.abandon()
        raise
    feed.close()


def _write_tar(t: _TarOut, meta: list[tuple[str, bytes]],
               trees: list[tuple[str, str, Manifest]]) -> None:
    for name, blob in meta:
        t.add(tar_header(name, REGTYPE, 0o644, len(blob)))
        t.add(blob + b"\0" * (-len(blob) % BLOCK))
    for role, src, m in trees:
        dirs = sorted(m.dirs)
        modes = _read_ahead(lambda path: os.lstat(path).st_mode,
                            [(f"{src}/{d}", 0) for d in dirs])
        with contextlib.closing(modes):
            for d, mode in zip(dirs, modes, strict=True):
                t.add(tar_header(f"{role}/{d}/", DIRTYPE, stat.S_IMODE(mode) | 0o700))
        for rel, target in sorted(m.symlinks.items()):
            t.add(tar_header(f"{role}/{rel}", SYMTYPE, 0o777, linkname=target))
        files = sorted(m.files.items())
        reads = _read_ahead(_read_small, [(f"{src}/{rel}", e.size) for rel, e in files])
        with contextlib.closing(reads):
            for (rel, entry), (st, data, digest) in zip(files, reads, strict=True):
                if data is None:
                    path = f"{src}/{rel}"
                    if not stat.S_ISREG(st.st_mode):
                        raise VerifyError(f"{path} changed since its manifest was written "
                                          f"(it is no longer a file); run `sitestack verify`")
                    digest, n = _stream_file(t, f"{role}/{rel}", path, entry, st)
                else:
                    n = len(data)
                    if n == entry.size:  # else refused below, before anything is written
                        t.add_member(tar_header(f"{role}/{rel}", REGTYPE, entry.mode, n, st.st_mtime_ns),
                                     data)
                if digest != entry.sha256 or n != entry.size:
                    raise VerifyError(f"{src}/{rel} changed since its manifest was written; "
                                      f"run `sitestack verify`")
    t.add(b"\0" * (2 * BLOCK))  # end of archive
    t.flush()


def _read_small(path: str) -> tuple[os.stat_result, bytes | None, str]:
    """lstat a file, and read and hash it unless it is large (then it is streamed)."""
    st = os.lstat(path)
    if st.st_size > READ_AHEAD_FILE or not stat.S_ISREG(st.st_mode):
        return st, None, ""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # One read of the size lstat gave (no fstat and no read to find the end, as read()
        # does); a file that shrank reads short and is refused by its size, one that grew
        # gives its first bytes, which the sha256 check then judges.
        data = os.read(fd, st.st_size)
        while len(data) < st.st_size and (more := os.read(fd, st.st_size - len(data))):
            data += more
    finally:
        os.close(fd)
    return st, data, hashlib.sha256(data).hexdigest()


def _read_ahead(fn: Callable[[str], T], items: list[tuple[str, int]]) -> Generator[T, None, None]:
    """fn(path) for each (path, size), in order: in this thread while reads are fast, else run
    ahead by threads within a memory budget.

    Reading a tree on a parallel filesystem is bound by the latency of each open and stat, not
    by bandwidth: several requests in flight hide it. But threads that find the data in the
    page cache only fight over the GIL (a pool cost a third more CPU than reading inline, and
    on two cores that CPU is taken from the compressor), so the first batches are read here,
    timed, and the pool starts only when a batch of small files takes longer than
    SLOW_READ per file (a cold or remote filesystem)."""
    i, n, slow = 0, len(items), 0
    while i < n and slow < 2:
        j, cost = i, 0
        while j < n and j - i < READ_BATCH and (j == i or cost + items[j][1] <= READ_BATCH_BYTES):
            cost += items[j][1] if items[j][1] <= READ_AHEAD_FILE else 0  # large: streamed later
            j += 1
        t0 = time.perf_counter()
        out = [fn(path) for path, _size in items[i:j]]
        # Two slow batches in a row, not one: a busy machine may stall any single batch.
        slow = slow + 1 if time.perf_counter() - t0 > (j - i) * SLOW_READ + cost / READ_BANDWIDTH else 0
        i = j
        yield from out
    if i < n:
        yield from _read_pooled(fn, items[i:])


def _read_pooled(fn: Callable[[str], T], items: list[tuple[str, int]]) -> Generator[T, None, None]:
    """fn(path) for each (path, size), in order, run ahead by threads within a memory budget;
    the number of batches in flight starts at 2 and grows only while the writer finds its next
    batch not ready. Paths go to the threads in batches (a future per file costs more than
    reading a small one)."""
    def run(batch: list[str]) -> list[T]:
        return [fn(path) for path in batch]

    pending: collections.deque[tuple[int, Future[list[T]]]] = collections.deque()
    depth = 2
    with ThreadPoolExecutor(READ_AHEAD_JOBS, thread_name_prefix="sitestack-pack") as pool:
        try:
            i, in_flight = 0, 0
            while i < len(items) or pending:
                while i < len(items) and (not pending or (
                        in_flight + min(items[i][1], READ_AHEAD_FILE) <= READ_AHEAD_BYTES
                        and len(pending) < depth)):
                    batch: list[str] = []
                    cost = 0
                    while i < len(items) and len(batch) < READ_BATCH and (
                            not batch or cost + items[i][1] <= READ_BATCH_BYTES):
                        batch.append(items[i][0])
                        cost += min(items[i][1], READ_AHEAD_FILE)
                        i += 1
                    pending.append((cost, pool.submit(run, batch)))
                    in_flight += cost
                cost, fut = pending.popleft()
                if not fut.done() and depth < 4 * READ_AHEAD_JOBS:
                    depth += 1  # the reads are behind: more of them at once
                in_flight -= cost
                yield from fut.result()
        finally:
            for _cost, fut in pending:
                fut.cancel()


# --- tar headers ------------------------------------------------------------------------------

_USTAR = struct.Struct("100s8s16s12s12s8sc100s255s")  # name mode uid+gid size mtime chksum type link rest
_USTAR_REST = b"ustar\x0000"  # then uname, gname, devmajor, devminor, prefix: all empty (NUL)
_IDS = b"0000000\x000000000\x00"  # uid, gid 0: the unpacking user owns what it extracts
_MAX_OCTAL_12 = 8 ** 11  # the largest size or mtime a ustar field holds, plus one


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode("utf-8", "surrogateescape")
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _ustar(name: bytes, type_: bytes, mode: int, size: int, mtime: int, linkname: bytes) -> bytes:
    buf = _USTAR.pack(name, b"%07o" % (mode & 0o7777), _IDS, b"%011o" % size, b"%011o" % mtime,
                      b"        ", type_, linkname, _USTAR_REST)
    return buf[:148] + b"%06o\0 " % sum(buf) + buf[156:]


@functools.lru_cache(maxsize=256)
def _pax_block(size: int) -> bytes:
    return _ustar(b"././@PaxHeader", b"x", 0o644, size, 0, b"")


def tar_header(name: str, type_: bytes, mode: int, size: int = 0, mtime_ns: int = 0,
               linkname: str = "") -> bytes:
    """One member's header: a ustar block, preceded by a pax 'x' header for what ustar cannot
    hold (a long or non-ASCII name or link, a large size, a sub-second mtime). What
    tarstream.TarReader reads, and what tar and sqfstar read."""
    pax: list[bytes] = []
    bname = name.encode("utf-8", "surrogateescape")
    blink = linkname.encode("utf-8", "surrogateescape")
    if len(bname) > 100 or not name.isascii():
        pax.append(_pax_record("path", name))
        bname = bname[:100] if name.isascii() else b"@PaxPath"
    if len(blink) > 100 or not linkname.isascii():
        pax.append(_pax_record("linkpath", linkname))
        blink = b"@PaxLink"
    if size >= _MAX_OCTAL_12:
        pax.append(_pax_record("size", str(size)))
        size = 0
    sec, frac = divmod(mtime_ns, 1_000_000_000)
    if frac or not 0 <= sec < _MAX_OCTAL_12:
        # mtime matters: a .pyc is valid only while its source keeps size and mtime
        pax.append(b"30 mtime=%d.%09d\n" % (sec, frac) if 10 ** 9 <= sec < 10 ** 10 else
                   _pax_record("mtime", f"{sec}.{frac:09d}" if sec >= 0 else
                               f"-{-mtime_ns // 1_000_000_000}.{-mtime_ns % 1_000_000_000:09d}"))
        sec = min(max(sec, 0), _MAX_OCTAL_12 - 1)
    block = _ustar(bname, type_, mode, size, sec, blink)
    if not pax:
        return block
    data = b"".join(pax)
    return _pax_block(len(data)) + data + b"\0" * (-len(data) % BLOCK) + block


class _TarOut:
    """Headers and small files gathered in one reused buffer and handed to `out` about 1 MiB at
    a time (one call into the compressor per MiB, not one per header); larger pieces go
    through as they are. A new 1 MiB buffer per flush cost more than the copying: every
    page of it is a fault. `out.write` must not keep what it is given (the compressor,
    a pipe and stage's sink all copy)."""

    def __init__(self, out: IO[bytes], size: int = 1 << 20, direct: int = 256 << 10) -> None:
        self.out, self.direct = out, direct
        self.buf, self.pos = bytearray(size), 0
        self.view = memoryview(self.buf)

    def add(self, b: bytes | memoryview) -> None:
        n = len(b)
        if n >= self.direct:
            self.flush()
            self.out.write(b)
            return
        if self.pos + n > len(self.buf):
            self.flush()
        self.buf[self.pos : self.pos + n] = b
        self.pos += n

    def add_member(self, header: bytes, data: bytes) -> None:
        """A header, then a small file's data and its padding to the next block: one call
        per file in the loop that writes a tree of small files."""
        n, pad = len(header), -len(data) % BLOCK
        end = self.pos + n + len(data) + pad
        if end > len(self.buf) or len(data) >= self.direct:
            self.add(header)
            self.add(data)
            if pad:
                self.add(_ZEROS[:pad])
            return
        pos = self.pos
        self.buf[pos : pos + n] = header
        self.buf[pos + n : end - pad] = data
        if pad:
            self.buf[end - pad : end] = _ZEROS[:pad]
        self.pos = end

    def flush(self) -> None:
        if self.pos:
            self.out.write(self.view[: self.pos])
            self.pos = 0


class _Feeder:
    """`out.write` in a thread of its own, up to FEED_DEPTH pieces behind the writer: the
    compressor's write blocks while its workers are busy, and the writer (reading, hashing,
    headers) would wait with it; `tar | zstd` overlaps the two the same way, in two processes.
    Immutable pieces are queued as they are; the writer's reused buffer is copied into one of
    FEED_DEPTH recycled buffers. An error of `out.write` is raised by the next write or close."""

    def __init__(self, out: IO[bytes], size: int = 1 << 20) -> None:
        import queue

        self.out = out
        self.todo: queue.Queue[tuple[bytes | memoryview, bytearray | None] | None] = queue.Queue(FEED_DEPTH)
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(FEED_DEPTH):
            self.free.put(bytearray(size))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sitestack-pack-feed", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.todo.get()) is not None:
            piece, buf = item
            if self.error is None:
                try:
                    self.out.write(piece)
                except BaseException as e:  # raised in the writer's thread
                    self.error = e
            if buf is not None:
                self.free.put(buf)

    def write(self, b: bytes | memoryview) -> int:
        if self.error is not None:
            raise self.error
        n = len(b)
        if isinstance(b, bytes):
            self.todo.put((b, None))
            return n
        buf = self.free.get()
        if len(buf) < n:
            buf = bytearray(n)
        buf[:n] = b
        self.todo.put((memoryview(buf)[:n], buf))
        return n

    def close(self) -> None:
        """Wait for every queued piece; raise what `out.write` raised."""
        self.todo.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """On an error of the writer: stop the thread without writing what is still queued."""
        self.error = self.error or BrokenPipeError("pack abandoned")
        self.todo.put(None)
        self.thread.join()


def _stream_file(t: _TarOut, name: str, path: str, entry: FileEntry,
                 st: os.stat_result) -> tuple[str, int]:
    """A large file, read and hashed in pieces as it is written; a file that grew or shrank
    since its lstat is refused (the header already gave its size)."""
    if st.st_size != entry.size:
        return "", st.st_size
    t.add(tar_header(name, REGTYPE, entry.mode, st.st_size, st.st_mtime_ns))
    h, n = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while n < st.st_size and (chunk := f.read(min(STREAM_PIECE, st.st_size - n))):
            h.update(chunk)
            t.add(chunk)
            n += len(chunk)
    if n == st.st_size and n % BLOCK:
        t.add(b"\0" * (BLOCK - n % BLOCK))
    return h.hexdigest(), n
