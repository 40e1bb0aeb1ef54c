"""Extract a sitestack tar.zst: the writers (what each member must obey: members.py).

A small streaming reader of the tar subset `pack.write_tar` writes (tarstream.py) hands each
member to `members.Members.check` before anything is written. Each file's sha256 is computed
from the archive stream and compared with the manifest *before* the file is written, so a file
on disk is written once and never read back: that one hash pass is the verification of every
file. A small pool of writer threads creates the files (hash, open, write, chmod, utime,
close), overlapping the kernel's per-file cost with the decompression and parsing of the next
members.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from sitestack.errors import VerifyError
from sitestack.scale.members import (
    HEADER,
    MAKE_DIR,
    MAKE_HARDLINK,
    MAKE_SYMLINK,
    META_FILE,
    WRITE_FILE,
    Members,
    Unpacked,
)
from sitestack.scale.tarstream import BLOCK, Member, TarReader

BIG_FILE = 8 << 20  # larger files are streamed in pieces by the reading thread
IN_FLIGHT = 64 << 20  # bytes read but not yet written, at most
READ_SIZE = 1 << 20  # compressed bytes the zstd reader takes from its source at a time


class _Writers:
    """Files handed from the reading thread to a few writer threads, bounded in bytes."""

    def __init__(self, jobs: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sitestack-unpack")
        self.cond = threading.Condition()
        self.in_flight = 0
        self.submitted = self.written = 0
        self.error: BaseException | None = None

    def submit(self, nbytes: int, fn: Callable[..., None], *args: object) -> None:
        with self.cond:
            while self.in_flight > IN_FLIGHT and self.error is None:
                self.cond.wait()
            self.check()
            self.in_flight += nbytes
            self.submitted += 1
        self.pool.submit(self._run, nbytes, fn, *args)

    def _run(self, nbytes: int, fn: Callable[..., None], *args: object) -> None:
        try:
            if self.error is None:
                fn(*args)
                with self.cond:
                    self.written += 1
        except BaseException as e:  # the first one is raised by the reading thread
            with self.cond:
                self.error = self.error or e
        finally:
            with self.cond:
                self.in_flight -= nbytes
                self.cond.notify_all()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self, cancel: bool = False) -> None:
        """Wait for the writers; with cancel, drop the files not started yet."""
        self.pool.shutdown(wait=True, cancel_futures=cancel)


def _write_file(path: str, data: bytes | memoryview, sha: str, mode: int, mtime_ns: int,
                name: str) -> None:
    if hashlib.sha256(data).hexdigest() != sha:
        raise VerifyError(f"sha256 mismatch for {name}: the archive is corrupt")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while len(view):
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)


def _file_mode(mode: int) -> int:
    return (mode & 0o777) | 0o600  # no setuid/setgid/sticky from an archive; owner may write


def unpack_tar(fileobj: IO[bytes], dest: Path, jobs: int | None = None) -> Unpacked:
    """Extract a sitestack tar.zst stream into dest (which must exist and be empty).

    Every member is checked before it is written; every file's sha256 is computed from the
    stream and compared with the manifest before the file is written. Raises VerifyError on
    anything unsafe, changed or missing, OSError (e.g. ENOSPC) when the disk fails.
    """
    import zstandard

    writers, members = _Writers(jobs or min(4, max(2, os.cpu_count() or 2))), Members()
    try:
        with zstandard.ZstdDecompressor().stream_reader(fileobj, read_size=READ_SIZE,
                                                       closefd=False) as z:
            tr = TarReader(z.read)
            u = _unpack_members(tr, str(dest), writers, members)
            tr.drain()
        writers.close()
        writers.check()
        if writers.written != writers.submitted:  # cannot happen; never trust it silently
            raise VerifyError(f"only {writers.written} of {writers.submitted} files were written")
        members.hard.make(str(dest))  # now that their targets are written
        return u
    except zstandard.ZstdError as e:
        raise VerifyError(f"archive is corrupt: {e}") from None
    finally:
        # on any error: no writer may still touch dest when the caller removes it
        writers.close(cancel=True)


def _unpack_members(tr: TarReader, dest: str, writers: _Writers, members: Members) -> Unpacked:
    made: set[str] = {dest}

    def makedirs(path: str) -> None:
        if path not in made:
            os.makedirs(path, 0o755, exist_ok=True)
            while path not in made:
                made.add(path)
                path = os.path.dirname(path)

    while (m := tr.next()) is not None:
        what, name, entry = members.check(m)
        if what == HEADER:
            members.take_header(tr.read_meta(m))
            continue
        if what == META_FILE:
            members.take_meta(name, tr.read_meta(m))
            continue
        path = os.path.join(dest, name)
        if what == MAKE_DIR:
            makedirs(path)
        elif what == MAKE_SYMLINK:
            makedirs(os.path.dirname(path))
            os.symlink(m.linkname, path)
        elif what == MAKE_HARDLINK:
            makedirs(os.path.dirname(path))
        elif what == WRITE_FILE:
            assert entry is not None
            makedirs(os.path.dirname(path))
            padded = -(-m.size // BLOCK) * BLOCK
            if m.size <= BIG_FILE:
                data = memoryview(tr.exact(padded))[: m.size]
                writers.submit(padded, _write_file, path, data, entry.sha256, _file_mode(m.mode),
                               m.mtime_ns, name)
            else:
                _write_big(tr, m, path, entry.sha256, padded, name)
    return members.finish()


def _write_big(tr: TarReader, m: Member, path: str, sha: str, padded: int, name: str) -> None:
    """A large file, streamed in pieces: hashed as it is written, removed if it does not match."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        left = m.size
        while left:
            view = memoryview(tr.exact(min(left, BIG_FILE)))
            left -= len(view)
            h.update(view)
            while len(view):
                view = view[os.write(fd, view):]
        if h.hexdigest() != sha:
            raise VerifyError(f"sha256 mismatch for {name}: the archive is corrupt")
        os.fchmod(fd, _file_mode(m.mode))
        os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
    finally:
        os.close(fd)
    tr.skip(padded - m.size)
