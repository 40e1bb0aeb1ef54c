"""Read sitestack archives safely: the header, and extraction checked file by file.

A tar.zst is extracted by a small streaming reader of the tar subset `pack.write_tar` writes
(POSIX ustar headers, each optionally preceded by a pax 'x' header). Every member is checked
before anything is written: absolute paths, '..', members below a symlink, links leaving the
tree, device and special files, duplicates, files missing from the manifest, and hard links
to anything but an earlier file of their part with the same manifest entry (tarlinks.py) are
refused. Each file's sha256 is computed from the archive stream and compared with the manifest
*before* the file is written, so a file on disk is written once and never read back: that one
hash pass is the verification of every file. A small pool of writer threads creates the files
(hash, open, write, chmod, utime, close), overlapping the kernel's per-file cost with the
decompression and parsing of the next members.

Length (over ~400 lines, on purpose): tar and squashfs extraction share one member check
(core.safepath), one writer pool and one verification pass; split by format, the two halves
would each carry a copy of the rules an archive must obey.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sitestack.core import safepath
from sitestack.core.manifest import Manifest, PrefixHit
from sitestack.core.records import MANIFEST, PREFIX_FILES
from sitestack.errors import ToolMissingError, VerifyError
from sitestack.scale.pack import META, ROLES, SQUASHFS_MAGIC, ZSTD_MAGIC, Header, content_hash
from sitestack.scale.tarlinks import HardLinks
from sitestack.scale.tarstream import (
    BLOCK,
    CONTIGUOUS,
    DIRECTORY,
    HARDLINK,
    MAX_META,
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
        return fmt, Header.from_json(_load_meta(r.stdout, "header.json"))
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
    return fmt, Header.from_json(_load_meta(data, "header.json"))


# --- checks -----------------------------------------------------------------------------------

def check_link(role: str, rel: str, target: str, header: Header,
               links: dict[str, str] | None = None) -> None:
    """Refuse a symlink that would point outside the staged tree, resolved through the
    links seen so far (absolute links may name an original prefix: relocation maps those
    inside). `links` (tree path -> target) gets this link added."""
    name = f"{role}/{rel}"
    if "\0" in target or not target:
        raise VerifyError(f"unsafe archive: symlink {name} has an empty or bad target")
    known = links if links is not None else {}
    known[name] = target
    try:
        safepath.resolve(name, known.get, _prefix_map(header))
    except safepath.Escape:
        raise VerifyError(f"unsafe archive: symlink {name} -> {target} points outside "
                          "the target") from None


def _prefix_map(header: Header) -> dict[str, str]:
    return {old: role for role, old in header.prefixes.items()}


def check_received(header: Header, manifests: dict[str, Manifest], blobs: dict[str, bytes],
                   hits: dict[str, list[PrefixHit]], links: dict[str, str]) -> None:
    """What every archive must satisfy once all of it is in: all links (now that every one is
    known) stay inside; the relocation list names only files of the manifest; and the header's
    content hash, file count and size are those of the manifests every file was checked
    against (the hash is of the manifests' bytes as received, `blobs`, which parse to
    `manifests`). A header cannot claim another stack's identity over other files."""
    safepath.check_links(links, _prefix_map(header))
    for role, role_hits in hits.items():
        listed = manifests[role].files
        for hit in role_hits:
            safepath.check_relative(hit.path, "relocation list")
            if hit.path not in listed or hit.kind not in ("text", "binary"):
                raise VerifyError(f"unsafe archive: the relocation list names {role}/{hit.path}, "
                                  "which is not a file of the archive")
    roles = [r for r in ROLES if r in header.prefixes]
    digest = content_hash([(r, header.prefixes[r], blobs[r]) for r in roles])
    if digest != header.content_hash:
        raise VerifyError(f"archive content does not match its header: the files are not "
                          f"{header.name}/{header.version} {header.short_hash} (they hash to "
                          f"{digest[:12]})")
    files = sum(len(manifests[r].files) for r in roles)
    size = sum(manifests[r].total_bytes for r in roles)
    if (files, size) != (header.files, header.bytes):
        raise VerifyError(f"archive header claims {header.files} files, {header.bytes} bytes; "
                          f"its manifests hold {files} files, {size} bytes")


def _load_meta(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as e:
        raise VerifyError(f"archive metadata {what} is corrupt: {e}") from None


def _manifest(data: Any, what: str) -> Manifest:
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise VerifyError(f"archive manifest {what} is corrupt ({type(e).__name__}: {e})") from None


def _hits(data: Any, what: str) -> list[PrefixHit]:
    try:
        return [PrefixHit(str(e["path"]), str(e["kind"])) for e in data["files"]]
    except (KeyError, TypeError, ValueError) as e:
        raise VerifyError(f"archive relocation list {what} is corrupt ({type(e).__name__}: {e})") from None


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

    writers, hard = _Writers(jobs or min(4, max(2, os.cpu_count() or 2))), HardLinks()
    try:
        with zstandard.ZstdDecompressor().stream_reader(fileobj, read_size=READ_SIZE,
                                                       closefd=False) as z:
            tr = TarReader(z.read)
            u = _unpack_members(tr, str(dest), writers, hard)
            tr.drain()
        writers.close()
        writers.check()
        if writers.written != writers.submitted:  # cannot happen; never trust it silently
            raise VerifyError(f"only {writers.written} of {writers.submitted} files were written")
        hard.make(str(dest))  # now that their targets are written
        return u
    except zstandard.ZstdError as e:
        raise VerifyError(f"archive is corrupt: {e}") from None
    finally:
        # on any error: no writer may still touch dest when the caller removes it
        writers.close(cancel=True)


def _unpack_members(tr: TarReader, dest: str, writers: _Writers, hard: HardLinks) -> Unpacked:
    header: Header | None = None
    manifests: dict[str, Manifest] = {}
    blobs: dict[str, bytes] = {}
    hits: dict[str, list[PrefixHit]] = {}
    seen: set[str] = set()
    links: set[str] = set()
    all_links: dict[str, str] = {}
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
        safepath.check_relative(name, "archive")
        if name in seen:
            raise VerifyError(f"unsafe archive: {name} appears twice")
        seen.add(name)
        if m.type in SPECIAL:
            raise VerifyError(f"unsafe archive: device or special file {name}")
        is_file = m.type in (REGULAR, CONTIGUOUS)
        if header is None:
            if name != f"{META}/header.json" or not is_file:
                raise VerifyError("not a sitestack archive (no header first)")
            header = Header.from_json(_load_meta(tr.read_meta(m), name))
            continue
        role, _, rel = name.partition("/")
        if role == META:
            if name == META:
                continue
            r, _, what = rel.partition("/")
            if r not in header.prefixes or not is_file:
                raise VerifyError(f"unexpected archive member {name}")
            blob = tr.read_meta(m)
            data = _load_meta(blob, name)
            if what == MANIFEST:
                manifests[r], blobs[r] = _manifest(data, name), blob
            elif what == PREFIX_FILES:
                hits[r] = _hits(data, name)
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
            check_link(role, rel, m.linkname, header, all_links)
            makedirs(os.path.dirname(path))
            os.symlink(m.linkname, path)
            links.add(name)
        elif m.type == HARDLINK:
            hard.check(name, m.linkname, man)
            makedirs(os.path.dirname(path))
        elif is_file:
            entry = man.files.get(rel)
            if entry is None:
                raise VerifyError(f"archive file {name} is not in its manifest")
            if m.size != entry.size:
                raise VerifyError(f"sha256 mismatch for {name}: the archive is corrupt "
                                  f"({m.size} bytes, the manifest says {entry.size})")
            hard.files[name] = entry
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
    check_received(header, manifests, blobs, hits, all_links)
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


def _read_regular(path: Path) -> bytes:
    """A metadata file of an extracted image: a regular file, never followed through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise VerifyError(f"archive metadata {path.name} is missing or not a file: "
                          f"{e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise VerifyError(f"archive metadata {path.name} is not a regular file")
        return f.read(MAX_META + 1)


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
    header = Header.from_json(_load_meta(_read_regular(out / META / "header.json"), "header"))
    manifests: dict[str, Manifest] = {}
    blobs: dict[str, bytes] = {}
    hits: dict[str, list[PrefixHit]] = {}
    links: dict[str, str] = {}
    for entry in os.listdir(out):
        if entry != META and entry not in header.prefixes:
            raise VerifyError(f"unexpected archive member {entry}")
    for role in header.prefixes:
        meta = out / META / role
        blobs[role] = _read_regular(meta / MANIFEST)
        manifests[role] = _manifest(_load_meta(blobs[role], MANIFEST), role)
        hits[role] = _hits(_load_meta(_read_regular(meta / PREFIX_FILES), PREFIX_FILES), role)
        root = out / role
        files, syms, _dirs = walk(root, ())
        for rel in files + syms:
            st = os.lstat(root / rel)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise VerifyError(f"unsafe archive: special file {role}/{rel}")
            if stat.S_ISLNK(st.st_mode):
                check_link(role, rel, os.readlink(root / rel), header, links)
    check_received(header, manifests, blobs, hits, links)  # before anything is read through a link
    for role in header.prefixes:
        root = out / role
        problems = verify(root, manifests[role], exclude=())  # the one hash pass of squashfs
        if problems:
            p = problems[0]
            raise VerifyError(f"sha256 check failed for {role}/{p.path} ({p.problem}) and "
                              f"{len(problems) - 1} more: the archive is corrupt")
        os.rename(root, dest / role)
    rmtree(out)
    return Unpacked(header, manifests, hits)
