"""Read sitestack archives safely: the header, and extraction checked file by file.

A tar.zst is extracted by a small streaming reader of the tar subset `pack.write_tar` writes
(POSIX ustar headers, each optionally preceded by a pax 'x' header). Every member is checked
before anything is written: absolute paths, '..', members below a symlink, links leaving the
tree, device and special files, hard links, duplicates and files missing from the manifest are
refused. Each file's sha256 is computed from the archive stream and compared with the manifest
*before* the file is written, so a file on disk is written once and never read back: that one
hash pass is the verification of every file. A small pool of writer threads creates the files
(hash, open, write, chmod, utime, close), overlapping the kernel's per-file cost with the
decompression and parsing of the next members.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sitestack.core.manifest import Manifest, PrefixHit, load_prefix_files
from sitestack.core.records import MANIFEST, PREFIX_FILES
from sitestack.errors import ToolMissingError, VerifyError
from sitestack.scale.pack import META, SQUASHFS_MAGIC, ZSTD_MAGIC, Header
from sitestack.scale.tarstream import (
    BLOCK,
    CONTIGUOUS,
    DIRECTORY,
    HARDLINK,
    REGULAR,
    SPECIAL,
    SYMLINK,
    Member,
    TarReader,
)

BIG_FILE = 8 << 20  # larger files are streamed in pieces by the reading thread
IN_FLIGHT = 64 << 20  # bytes read but not yet written, at most
READ_SIZE = 1 << 20  # compressed bytes the zstd reader takes from its source at a time


@dataclass
class Unpacked:
    header: Header
    manifests: dict[str, Manifest]
    hits: dict[str, list[PrefixHit]]


def detect_format(first: bytes) -> str:
    if first.startswith(ZSTD_MAGIC):
        return "tar.zst"
    if first.startswith(SQUASHFS_MAGIC):
        return "squashfs"
    raise VerifyError("not a sitestack archive (neither tar.zst nor squashfs)")


def read_header(archive: Path) -> tuple[str, Header]:
    """(format, header) of an archive file, reading only its start."""
    with open(archive, "rb") as f:
        fmt = detect_format(f.read(4))
    if fmt == "squashfs":
        r = subprocess.run(["unsquashfs", "-cat", str(archive), f"{META}/header.json"],
                           capture_output=True)
        if r.returncode != 0:
            raise VerifyError(f"{archive}: cannot read its header: {r.stderr.decode()[-300:]}")
        return fmt, Header.from_json(json.loads(r.stdout))
    import zstandard

    try:
        with open(archive, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z:
            tr = TarReader(z.read)
            m = tr.next()
            if m is None or m.name != f"{META}/header.json" or m.type not in (REGULAR, CONTIGUOUS):
                raise VerifyError(f"{archive}: not a sitestack archive (no header first)")
            data = tr.read_meta(m)
    except zstandard.ZstdError as e:
        raise VerifyError(f"{archive}: archive is corrupt: {e}") from None
    return fmt, Header.from_json(json.loads(data))


# --- checks -----------------------------------------------------------------------------------

def check_link(role: str, rel: str, target: str, header: Header) -> None:
    """Refuse a symlink that would point outside the staged tree (absolute links may name
    an original prefix: relocation maps those inside)."""
    if "\0" in target or not target:
        raise VerifyError(f"unsafe archive: symlink {role}/{rel} has an empty or bad target")
    if target.startswith("/"):
        t = posixpath.normpath(target)
        if not any(t == p or t.startswith(p + "/") for p in header.prefixes.values()):
            raise VerifyError(f"unsafe archive: symlink {role}/{rel} -> {target} points outside "
                              "the target")
        return
    resolved = posixpath.normpath(posixpath.join(role, posixpath.dirname(rel), target))
    if resolved == ".." or resolved.startswith("../"):
        raise VerifyError(f"unsafe archive: symlink {role}/{rel} -> {target} points outside "
                          "the target")


def check_name(name: str) -> None:
    if name.startswith("/") or "\0" in name:
        raise VerifyError(f"unsafe archive: absolute path {name!r}")
    if ".." in name.split("/"):
        raise VerifyError(f"unsafe archive: path with '..': {name!r}")
    if posixpath.normpath(name) != name.rstrip("/"):
        raise VerifyError(f"unsafe archive: path is not normalized: {name!r}")


# --- extracting a tar.zst ---------------------------------------------------------------------

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

    writers = _Writers(jobs or min(4, max(2, os.cpu_count() or 2)))
    try:
        with zstandard.ZstdDecompressor().stream_reader(fileobj, read_size=READ_SIZE,
                                                       closefd=False) as z:
            tr = TarReader(z.read)
            u = _unpack_members(tr, str(dest), writers)
            tr.drain()
        writers.close()
        writers.check()
        if writers.written != writers.submitted:  # cannot happen; never trust it silently
            raise VerifyError(f"only {writers.written} of {writers.submitted} files were written")
        return u
    except zstandard.ZstdError as e:
        raise VerifyError(f"archive is corrupt: {e}") from None
    finally:
        # on any error: no writer may still touch dest when the caller removes it
        writers.close(cancel=True)


def _unpack_members(tr: TarReader, dest: str, writers: _Writers) -> Unpacked:
    header: Header | None = None
    manifests: dict[str, Manifest] = {}
    hits: dict[str, list[PrefixHit]] = {}
    seen: set[str] = set()
    links: set[str] = set()
    dirsets: dict[str, set[str]] = {}
    made: set[str] = {dest}

    def makedirs(path: str) -> None:
        if path not in made:
            os.makedirs(path, 0o755, exist_ok=True)
            while path not in made:
                made.add(path)
                path = os.path.dirname(path)

    while (m := tr.next()) is not None:
        name = m.name.rstrip("/")
        check_name(name)
        if name in seen:
            raise VerifyError(f"unsafe archive: {name} appears twice")
        seen.add(name)
        if m.type in SPECIAL:
            raise VerifyError(f"unsafe archive: device or special file {name}")
        if m.type == HARDLINK:
            raise VerifyError(f"unsafe archive: hard link {name}")
        is_file = m.type in (REGULAR, CONTIGUOUS)
        if header is None:
            if name != f"{META}/header.json" or not is_file:
                raise VerifyError("not a sitestack archive (no header first)")
            header = Header.from_json(json.loads(tr.read_meta(m)))
            continue
        role, _, rel = name.partition("/")
        if role == META:
            if name == META:
                continue
            r, _, what = rel.partition("/")
            if r not in header.prefixes or not is_file:
                raise VerifyError(f"unexpected archive member {name}")
            data = json.loads(tr.read_meta(m))
            if what == MANIFEST:
                manifests[r] = Manifest.from_json(data)
            elif what == PREFIX_FILES:
                hits[r] = [PrefixHit(e["path"], e["kind"]) for e in data["files"]]
            continue
        if role not in manifests:
            raise VerifyError(f"archive member {name} comes before its manifest")
        man = manifests[role]
        if role not in dirsets:
            dirsets[role] = set(man.dirs)
        if links:
            i = name.find("/")
            while i >= 0:
                if name[:i] in links:
                    raise VerifyError(f"unsafe archive: {name} is below a symlink")
                i = name.find("/", i + 1)
        path = os.path.join(dest, name)
        if not rel:
            if m.type != DIRECTORY:
                raise VerifyError(f"unexpected archive member {name}")
            makedirs(path)
        elif m.type == DIRECTORY:
            if rel not in dirsets[role]:
                raise VerifyError(f"archive folder {name} is not in its manifest")
            makedirs(path)
        elif m.type == SYMLINK:
            if man.symlinks.get(rel) != m.linkname:
                raise VerifyError(f"archive symlink {name} does not match its manifest")
            check_link(role, rel, m.linkname, header)
            makedirs(os.path.dirname(path))
            os.symlink(m.linkname, path)
            links.add(name)
        elif is_file:
            entry = man.files.get(rel)
            if entry is None:
                raise VerifyError(f"archive file {name} is not in its manifest")
            if m.size != entry.size:
                raise VerifyError(f"sha256 mismatch for {name}: the archive is corrupt "
                                  f"({m.size} bytes, the manifest says {entry.size})")
            makedirs(os.path.dirname(path))
            padded = -(-m.size // BLOCK) * BLOCK
            if m.size <= BIG_FILE:
                data = memoryview(tr.exact(padded))[: m.size]
                writers.submit(padded, _write_file, path, data, entry.sha256, _file_mode(m.mode),
                               m.mtime_ns, name)
            else:
                _write_big(tr, m, path, entry.sha256, padded, name)
        else:
            raise VerifyError(f"unsafe archive: unsupported member type for {name}")
    if header is None:
        raise VerifyError("archive is empty")
    for role in header.prefixes:
        if role not in manifests:
            raise VerifyError(f"archive has no manifest for {role}")
        want = {f"{role}/{p}" for p in [*manifests[role].files, *manifests[role].symlinks]}
        missing = want - seen
        if missing:
            raise VerifyError(f"archive is truncated: {len(missing)} files missing, "
                              f"e.g. {sorted(missing)[0]}")
    return Unpacked(header, manifests, hits)


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


# --- squashfs ---------------------------------------------------------------------------------

def unpack_squashfs(image: Path, dest: Path) -> Unpacked:
    """Check a squashfs image's listing, extract it, then hash every file against its manifest."""
    import shutil

    from sitestack.core.fsutil import rmtree
    from sitestack.core.manifest import verify, walk

    if not shutil.which("unsquashfs"):
        raise ToolMissingError("unsquashfs (squashfs-tools) is needed for squashfs archives")
    r = subprocess.run(["unsquashfs", "-lls", str(image)], capture_output=True, text=True)
    if r.returncode != 0:
        raise VerifyError(f"squashfs image is corrupt: {r.stderr.strip()[-300:]}")
    for line in r.stdout.splitlines():
        if line[:1] in ("c", "b", "p", "s"):
            raise VerifyError(f"unsafe archive: device or special file: {line.split()[-1]}")
    out = dest / ".squashfs-root"
    r = subprocess.run(["unsquashfs", "-no-xattrs", "-no-progress", "-quiet", "-d", str(out),
                        str(image)], capture_output=True, text=True)
    if r.returncode != 0:
        raise VerifyError(f"squashfs extraction failed: {r.stderr.strip()[-300:]}")
    header = Header.from_json(json.loads((out / META / "header.json").read_bytes()))
    manifests: dict[str, Manifest] = {}
    hits: dict[str, list[PrefixHit]] = {}
    for entry in os.listdir(out):
        if entry != META and entry not in header.prefixes:
            raise VerifyError(f"unexpected archive member {entry}")
    for role in header.prefixes:
        manifests[role] = Manifest.load(out / META / role / MANIFEST)
        hits[role] = load_prefix_files(out / META / role / PREFIX_FILES)[1]
        root = out / role
        files, syms, _dirs = walk(root, ())
        for rel in files + syms:
            st = os.lstat(root / rel)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise VerifyError(f"unsafe archive: special file {role}/{rel}")
            if stat.S_ISLNK(st.st_mode):
                check_link(role, rel, os.readlink(root / rel), header)
        problems = verify(root, manifests[role], exclude=())  # the one hash pass of squashfs
        if problems:
            p = problems[0]
            raise VerifyError(f"sha256 check failed for {role}/{p.path} ({p.problem}) and "
                              f"{len(problems) - 1} more: the archive is corrupt")
        os.rename(root, dest / role)
    rmtree(out)
    return Unpacked(header, manifests, hits)
