"""The writer of the tar stream `sitestack pack` produces (tarstream.py reads it back).

POSIX ustar headers, each preceded by a pax 'x' header only for what ustar cannot hold
(tarheader.py). A file that is a hard link of one written earlier in the same part (same
inode, same manifest entry) goes as a tar hard-link member, as GNU tar writes it: its bytes
once, not twice (a stack's lib/sitestack-pip is hard links of its pip). Every file is checked
against its manifest entry as it is read: its size by the writer, its sha256 by the feeder's
thread before the bytes go out (_Feeder), so a tampered tree is never packed silently; the
sha256 only where core.checked does not already know the file's inode and stat data to hold
checked bytes (a changed file always has a new ctime, and a new mtime unless put back).
Two threads, as `tar | zstd` has two processes: the writer reads each file straight into one
of a few recycled buffers behind its header (no copy, no allocation per file); the feeder
checks each full buffer and hands it to the compressor. Where reads are slow (a cold or
remote filesystem), a few threads read ahead of the writer (_read_ahead).

Length (over ~400 lines): the buffers and the two threads that share them, and the
read-ahead are one writer; apart, each would only make sense with the others open.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Generator
from typing import IO, TypeVar

from sitestack import TYPE_CHECKING
from sitestack.core.checked import Checked
from sitestack.core.manifest import FileEntry, Manifest
from sitestack.errors import VerifyError
from sitestack.scale.tarheader import (
    BLOCK,
    DIRTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    file_header,
    tar_header,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

PIECE = 8 << 20  # the writer's buffers: files up to this size go out whole, after their check
FEED_DEPTH = 3  # full buffers queued for the feeder at most (FEED_DEPTH + 2 buffers in all)
READ_AHEAD_JOBS = 8  # at most this many threads read files while packing
READ_AHEAD_BYTES = 64 << 20  # read but not yet written, at most
READ_AHEAD_FILE = 8 << 20  # larger files are read by the writer itself, in pieces
READ_BATCH = 64  # files handed to a reading thread at once
READ_BATCH_BYTES = 4 << 20
SLOW_READ = 300e-6  # seconds per small file above which reads go to a pool (page cache: ~25 us)
READ_BANDWIDTH = 200 << 20  # bytes/s below which a batch counts as slow too
_ZEROS = bytes(BLOCK)
T = TypeVar("T")


def write_tar(out: IO[bytes], meta: list[tuple[str, bytes]],
              trees: list[tuple[str, str, Manifest]], checked: dict[str, Checked] | None = None) -> None:
    """Stream an uncompressed tar into `out`: the `meta` blobs (name, data) first, then for
    each (role, source folder, manifest) the manifest's folders, symlinks and files under
    `role/`, each sorted (the order is deterministic). A file whose size or sha256 differs
    from its manifest entry raises VerifyError; a small file's bytes reach `out` only once
    its sha256 is checked, a large file's (streamed) ones before the end of the archive.
    `checked[role]` (started) spares the sha256 of the files it trusts and confirms what is
    read; the caller saves it once this returns."""
    feed = _Feeder(out)
    try:
        _write_tar(_TarOut(feed), meta, trees, checked or {})
    except BaseException:
        feed.abandon()
        raise
    feed.close()


def _changed(path: str) -> VerifyError:
    return VerifyError(f"{path} changed since its manifest was written; run `sitestack verify`")


def _write_tar(t: _TarOut, meta: list[tuple[str, bytes]],
               trees: list[tuple[str, str, Manifest]], checked: dict[str, Checked]) -> None:
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
        _write_files(t, role, src, sorted(m.files.items()), checked.get(role))  # Checked's order
    t.add(b"\0" * (2 * BLOCK))  # end of archive
    t.flush()


def _write_files(t: _TarOut, role: str, src: str, files: list[tuple[str, FileEntry]],
                 ch: Checked | None) -> None:
    """The files, read here while reads are fast, by _read_pooled's threads once two batches
    in a row were slow (the test of _read_ahead; time waiting for the feeder is not counted)."""
    first: dict[tuple[int, int], tuple[str, FileEntry]] = {}  # this part's inodes: see _added_link
    i, n, slow = 0, len(files), 0
    while i < n and slow < 2:
        j, cost = i, 0
        while j < n and j - i < READ_BATCH and (j == i or cost + files[j][1].size <= READ_BATCH_BYTES):
            cost += files[j][1].size
            j += 1
        t0, waited = time.perf_counter(), t.feed.waited
        for k in range(i, j):
            _add_file(t, role, src, files[k], first, ch, k)
        took = time.perf_counter() - t0 - (t.feed.waited - waited)
        slow = slow + 1 if took > (j - i) * SLOW_READ + cost / READ_BANDWIDTH else 0
        i = j
    if i == n:
        return
    rest = files[i:]
    reads = _read_pooled(_read_small, [(f"{src}/{rel}", e.size) for rel, e in rest])
    with contextlib.closing(reads):
        for k, ((rel, entry), (st, data)) in enumerate(zip(rest, reads, strict=True), start=i):
            if data is None:  # large, or no longer a file: _add_file reads or refuses it
                _add_file(t, role, src, (rel, entry), first, ch, k)
            elif len(data) != entry.size:  # refused before anything of it is written
                raise _changed(f"{src}/{rel}")
            else:
                trusted = _trusted(ch, k, st)
                if not _added_link(t, first, st, f"{role}/{rel}", entry):
                    t.add_member(file_header(f"{role}/{rel}", entry.mode, entry.size, st.st_mtime_ns),
                                 data, None if trusted else (data, None, entry.sha256, src, rel))


def _trusted(ch: Checked | None, k: int, st: os.stat_result) -> bool:
    """Whether file `k` (as `st`, its lstat before the read) needs no sha256 (core.checked);
    noted as checked either way, kept if the whole pack succeeds: a later change has a later ctime."""
    if ch is None:
        return False
    trusted = ch.trusted(k, st)
    ch.confirm(k, st, trusted)
    return trusted


def _add_file(t: _TarOut, role: str, src: str, item: tuple[str, FileEntry],
              first: dict[tuple[int, int], tuple[str, FileEntry]], ch: Checked | None, k: int) -> None:
    rel, entry = item
    path = f"{src}/{rel}"
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):  # checked before open: a FIFO or a device is never opened
        raise VerifyError(f"{path} changed since its manifest was written "
                          f"(it is no longer a file); run `sitestack verify`")
    if st.st_size != entry.size:
        raise _changed(path)
    trusted = _trusted(ch, k, st)
    if _added_link(t, first, st, f"{role}/{rel}", entry):
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        t.add_file(file_header(f"{role}/{rel}", entry.mode, entry.size, st.st_mtime_ns), fd,
                   entry.size, None if trusted else entry.sha256, src, rel)
    finally:
        os.close(fd)


def _added_link(t: _TarOut, first: dict[tuple[int, int], tuple[str, FileEntry]], st: os.stat_result,
                name: str, entry: FileEntry) -> bool:
    """Write `name` as a hard-link member if this part already holds the file `st` is (same
    inode, and the same manifest entry: its bytes were checked against that); else note
    `name` as that inode's first and write nothing. Never across parts: `first` is one
    part's, and unpack links within one. A file with one link needs no lookup."""
    if st.st_nlink < 2:
        return False
    prev = first.setdefault((st.st_dev, st.st_ino), (name, entry))
    if prev[0] == name or prev[1] != entry:
        return False
    t.add(tar_header(name, LNKTYPE, entry.mode, 0, st.st_mtime_ns, prev[0]))
    return True


def _read_small(path: str) -> tuple[os.stat_result, bytes | None]:
    """lstat a file, and read it unless it is large (then the writer reads it in pieces)."""
    st = os.lstat(path)
    if st.st_size > READ_AHEAD_FILE or not stat.S_ISREG(st.st_mode):
        return st, None
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
    return st, data


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
    # Here, not at import: most packs of a warm tree never need the threads.
    from concurrent.futures import ThreadPoolExecutor

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


# --- writing ----------------------------------------------------------------------------------

# A sha256 to check before a piece goes out: (data, None, sha256, src, rel) for a whole
# file; (piece, h, None, ...) feeds h, (b"", h, sha256, ...) ends a file read in pieces.
Check = tuple["bytes | memoryview", "hashlib._Hash | None", "str | None", str, str]


def _check(checks: list[Check]) -> None:
    sha256 = hashlib.sha256
    for data, h, expected, src, rel in checks:
        if h is None:
            if sha256(data).hexdigest() != expected:
                raise _changed(f"{src}/{rel}")
        else:
            if data:
                h.update(data)
            if expected is not None and h.hexdigest() != expected:
                raise _changed(f"{src}/{rel}")


class _TarOut:
    """The tar stream, gathered in PIECE-sized buffers that go to the feeder whole, each with the
    checks of the files in it (one call into the compressor per buffer, not one per file); the
    feeder hands back an empty one (recycled: a new buffer per flush cost more than copying,
    every page of it a fault). Pieces of PIECE or more that are already bytes go as they are."""

    def __init__(self, feed: _Feeder) -> None:
        self.feed = feed
        self.buf, self.pos = feed.buffer(), 0
        self.view = memoryview(self.buf)
        self.checks: list[Check] = []

    def add(self, b: bytes, check: Check | None = None) -> None:
        n = len(b)
        if self.pos + n > len(self.buf):
            self.flush()
            if n >= len(self.buf):
                self.feed.put(b, [check] if check else [], None)
                return
        self.buf[self.pos : self.pos + n] = b
        self.pos += n
        if check:
            self.checks.append(check)

    def add_member(self, header: bytes, data: bytes, check: Check | None) -> None:
        """A header, then a file's data (read by another thread) and its padding."""
        self.add(header)
        self.add(data, check)
        if pad := -len(data) % BLOCK:
            self.add(_ZEROS[:pad])

    def add_file(self, header: bytes, fd: int, size: int, sha256: str | None, src: str, rel: str) -> None:
        """A header, then `size` bytes read from `fd` straight into the buffer, and padding.
        A file that fits in one buffer goes out whole, after its check; a larger one in
        buffer-sized pieces, judged after its last (the header already gave its size).
        No sha256: the file is trusted (core.checked), its bytes go unhashed."""
        pad = -size % BLOCK
        whole = len(header) + size + pad
        if self.pos + whole > len(self.buf) and whole <= len(self.buf):
            self.flush()
        self.add(header)
        if self.pos + size + pad <= len(self.buf):
            start = self.pos
            self._read_into(fd, start, start + size, src, rel)
            if sha256 is not None:
                self.checks.append((self.view[start : start + size], None, sha256, src, rel))
        else:
            h, left = (hashlib.sha256() if sha256 is not None else None), size
            while left:
                if self.pos == len(self.buf):
                    self.flush()
                start = self.pos
                n = min(left, len(self.buf) - start)
                self._read_into(fd, start, start + n, src, rel)
                if h is not None:
                    self.checks.append((self.view[start : start + n], h, None, src, rel))
                left -= n
            if h is not None:
                self.checks.append((b"", h, sha256, src, rel))
        if pad:
            self.add(_ZEROS[:pad])

    def _read_into(self, fd: int, start: int, end: int, src: str, rel: str) -> None:
        self.pos = end
        view = self.view
        while start < end:
            n = os.readv(fd, [view[start:end]])
            if not n:  # shrank since its lstat; one that grew gives its first bytes, judged by sha256
                raise _changed(f"{src}/{rel}")
            start += n

    def flush(self) -> None:
        if self.pos or self.checks:
            self.feed.put(self.view[: self.pos], self.checks, self.buf)
            self.buf, self.pos, self.checks = self.feed.buffer(), 0, []
            self.view = memoryview(self.buf)


class _Feeder:
    """Checks and `out.write` in a thread of its own, up to FEED_DEPTH buffers behind the
    writer: the compressor's write blocks while its workers are busy, and the writer would wait
    with it; `tar | zstd` overlaps the two the same way, in two processes. Each piece's sha256
    checks run first (hashlib drops the GIL), so a piece with a changed file never reaches `out`.
    An error of a check or of `out.write` is raised by the writer's next call, or by close.
    `waited` is the writer's time spent in put and buffer (blocked while the feeder is behind)."""

    def __init__(self, out: IO[bytes]) -> None:
        import queue

        self.out = out
        self.todo: queue.Queue[tuple[bytes | memoryview, list[Check], bytearray | None] | None] = \
            queue.Queue(FEED_DEPTH)
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(FEED_DEPTH + 2):  # queued, being written, being filled
            self.free.put(bytearray(PIECE))
        self.error: BaseException | None = None
        self.waited = 0.0
        self.thread = threading.Thread(target=self._run, name="sitestack-pack-feed", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.todo.get()) is not None:
            piece, checks, buf = item
            if self.error is None:
                try:
                    _check(checks)
                    if len(piece):
                        self.out.write(piece)
                except BaseException as e:  # raised in the writer's thread
                    self.error = e
            if buf is not None:
                self.free.put(buf)

    def buffer(self) -> bytearray:
        """An empty buffer to fill (waits while all are queued)."""
        if self.error is not None:
            raise self.error
        t0 = time.perf_counter()
        buf = self.free.get()
        self.waited += time.perf_counter() - t0
        return buf

    def put(self, piece: bytes | memoryview, checks: list[Check], buf: bytearray | None) -> None:
        """Queue `piece` (a view of `buf`, which comes back to `buffer()` once written, or an
        immutable bytes) after its `checks`."""
        if self.error is not None:
            raise self.error
        t0 = time.perf_counter()
        self.todo.put((piece, checks, buf))
        self.waited += time.perf_counter() - t0

    def close(self) -> None:
        """Wait for every queued piece; raise what a check or `out.write` raised."""
        self.todo.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """On an error of the writer: stop the thread without writing what is still queued."""
        self.error = self.error or BrokenPipeError("pack abandoned")
        self.todo.put(None)
        self.thread.join()
