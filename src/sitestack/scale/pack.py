"""Pack a stack (or a layer with its stack) into one archive (reading it: unpack.py).

Archive layout (tar.zst; squashfs holds the same tree):
    .sitestack-pack/header.json              name, version, kind, prefixes, python_xy, content hash
    .sitestack-pack/<role>/manifest.json     sha256 of every file of that part
    .sitestack-pack/<role>/prefix-files.json files that name the part's original prefix
    <role>/...                               the part's files; role is "stack" or "layer"
The metadata comes first, so an extractor checks every file against its manifest while it
writes it, and relocation at the destination needs nothing but the archive.

Length (over ~400 lines, on purpose): the archive's header, what goes in it, and the writer of
its tar stream (headers written here, not by tarfile, whose header code was most of a pack's
CPU time) are one format; splitting them would put the format's two halves in two files.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from sitestack import __version__
from sitestack.core import pyvenv
from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import FileEntry, Manifest, PrefixHit, load_prefix_files, scan
from sitestack.core.records import MANIFEST, PREFIX_FILES
from sitestack.errors import ArchiveError, ConflictError, ToolMissingError, UsageError, VerifyError

META = ".sitestack-pack"
ROLES = ("stack", "layer")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SQUASHFS_MAGIC = b"hsqs"
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
STREAM_LEVEL = 1  # packing on the fly for stage: compression speed is on the critical path
HASH_RE = re.compile(r"[0-9a-f]{64}")
XY_RE = re.compile(r"3\.[0-9]{1,3}")
T = TypeVar("T")


@dataclass(frozen=True)
class Part:
    role: str  # "stack" | "layer"
    prefix: str  # the original absolute prefix
    manifest: Manifest
    hits: tuple[PrefixHit, ...]
    source: Path | None = None  # where the files are, at pack time only


@dataclass(frozen=True)
class Header:
    name: str
    version: str
    kind: str  # "stack" | "layer"
    python_xy: str
    prefixes: dict[str, str]  # role -> original prefix
    content_hash: str
    files: int
    bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def short_hash(self) -> str:
        return self.content_hash[:12]

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}-{self.short_hash}"

    def to_json(self) -> dict[str, Any]:
        return {"format": "sitestack-pack", "format_version": 1, "sitestack": __version__,
                "name": self.name, "version": self.version, "kind": self.kind,
                "python_xy": self.python_xy, "prefixes": self.prefixes,
                "content_hash": self.content_hash, "files": self.files, "bytes": self.bytes,
                **self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Header:
        try:
            return cls._from_json(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise VerifyError(f"archive header is corrupt ({type(e).__name__}: {e})") from None

    @classmethod
    def _from_json(cls, d: dict[str, Any]) -> Header:
        if not isinstance(d, dict) or d.get("format") != "sitestack-pack":
            raise VerifyError("not a sitestack archive (no sitestack header)")
        prefixes = {str(k): str(v) for k, v in dict(d["prefixes"]).items()}
        for role, p in prefixes.items():
            # Absolute links may only name these prefixes, so they must be real, narrow paths.
            if role not in ROLES or not p.startswith("/") or posixpath.normpath(p) != p or p == "/":
                raise VerifyError(f"archive header has a bad prefix for {role!r}: {p!r}")
        if "stack" not in prefixes:
            raise VerifyError("archive header names no stack")
        for key in ("name", "version"):
            if not _safe_component(str(d[key])):
                raise VerifyError(f"archive header has a bad {key}: {d[key]!r}")
        if not HASH_RE.fullmatch(str(d["content_hash"])):  # it becomes part of a path
            raise VerifyError(f"archive header has a bad content hash: {d['content_hash']!r}")
        if not XY_RE.fullmatch(str(d["python_xy"])):  # it names the interpreter to run
            raise VerifyError(f"archive header has a bad python_xy: {d['python_xy']!r}")
        known = {"name", "version", "kind", "python_xy", "prefixes", "content_hash", "files", "bytes"}
        return cls(str(d["name"]), str(d["version"]), str(d["kind"]), str(d["python_xy"]),
                   prefixes, str(d["content_hash"]), int(d["files"]), int(d["bytes"]),
                   {k: v for k, v in d.items() if k not in known})


def _safe_component(s: str) -> bool:
    # It becomes part of DIR/sitestack/<name>-<version>-<hash>: no '/', no leading '.'
    # (stage's own .tmp-*/.locks entries), no control characters.
    return (bool(s) and "/" not in s and not s.startswith(".")
            and not any(ord(c) < 32 or ord(c) == 127 for c in s))


def content_hash(parts: list[tuple[str, str, Manifest]]) -> str:
    """The content hash of (role, original prefix, manifest) parts, in order.

    pack writes it into the header; unpack computes it again from the manifests it checked
    every received file against, so a header cannot claim another stack's hash."""
    h = hashlib.sha256()
    for role, prefix, manifest in parts:
        h.update(json.dumps([role, prefix, manifest.to_json()], sort_keys=True).encode())
    return h.hexdigest()


# --- what to pack ---------------------------------------------------------------------------

def _python_xy(prefix: Path) -> str | None:
    for p in sorted((prefix / "bin").glob("python3.*")):
        xy = p.name[len("python"):]
        if xy.replace(".", "").isdigit() and (prefix / "lib" / f"python{xy}").is_dir():
            return xy
    return None


def prefix_part(prefix: Path, role: str = "stack") -> tuple[Part, dict[str, Any]]:
    """A stack or clone prefix; uses its records when they describe this very path."""
    from sitestack.site.registry import Site

    prefix = Path(os.path.abspath(prefix))
    rec = Site.from_prefix(prefix)
    recs = prefix / ".sitestack"
    # A published stack is read-only and its records name this very path: trust them (every
    # file is still checked against them as it is read). A clone is writable: hash it now.
    if (rec is not None and not os.lstat(prefix).st_mode & 0o222
            and (recs / MANIFEST).is_file() and (recs / PREFIX_FILES).is_file()):
        old, hits = load_prefix_files(recs / PREFIX_FILES)
        if old == str(prefix):
            info = {"name": rec.name, "version": rec.version, "python_xy": rec.python_xy}
            return Part(role, str(prefix), Manifest.load(recs / MANIFEST), tuple(hits),
                        prefix), info
    xy = _python_xy(prefix)
    if xy is None:
        raise UsageError(f"{prefix} is not a Python prefix (no bin/python3.X with lib/python3.X)")
    manifest, hits = scan(prefix, [str(prefix)])
    info = {"name": rec.name if rec else prefix.name, "version": rec.version if rec else "clone",
            "python_xy": xy}
    return Part(role, str(prefix), manifest, tuple(hits), prefix), info


def layer_part(layer: Path) -> tuple[Part, Path]:
    """A venv layer; returns it with the stack prefix its pyvenv.cfg points at."""
    layer = Path(os.path.abspath(layer))
    cfg = layer / pyvenv.CFG
    if not cfg.is_file():
        raise UsageError(f"{layer} is not a layer (no pyvenv.cfg)")
    home = pyvenv.read(cfg).get("home")
    if not home:
        raise UsageError(f"{cfg} has no 'home' line")
    stack = Path(home).parent
    manifest, hits = scan(layer, [str(layer), str(stack)], exclude=())
    return Part("layer", str(layer), manifest, tuple(hits), layer), stack


def resolve(target: str, root: SiteRoot, layer: str | None = None) -> tuple[Header, list[Part]]:
    """TARGET is NAME[/VERSION], a stack or clone prefix, or a layer; --layer adds a layer."""
    from sitestack.site.registry import Site

    path = Path(os.path.expanduser(target))
    is_path = target.startswith(("/", ".", "~")) or (path.is_dir() and (
        (path / "pyvenv.cfg").is_file() or _python_xy(path) is not None))
    parts: list[Part] = []
    if is_path and (path / "pyvenv.cfg").is_file():
        if layer:
            raise UsageError("TARGET is already a layer; do not give --layer too")
        layer = str(path)
        lpart, stack_prefix = layer_part(path)
        spart, info = prefix_part(stack_prefix)
        parts = [spart, lpart]
    else:
        if is_path:
            spart, info = prefix_part(path)
        else:
            rec = Site(root).get(target)
            spart, info = prefix_part(rec.prefix)
        parts = [spart]
        if layer:
            lpart, stack_prefix = layer_part(Path(os.path.expanduser(layer)))
            if os.path.realpath(stack_prefix) != os.path.realpath(spart.prefix):
                raise UsageError(f"layer {layer} sits on {stack_prefix}, not on {spart.prefix}")
            parts.append(lpart)
    return make_header(info, parts), parts


def make_header(info: dict[str, Any], parts: list[Part]) -> Header:
    digest = content_hash([(p.role, p.prefix, p.manifest) for p in parts])
    extra = {"layer_name": Path(parts[1].prefix).name} if len(parts) > 1 else {}
    return Header(info["name"], info["version"], "layer" if len(parts) > 1 else "stack",
                  info["python_xy"], {p.role: p.prefix for p in parts}, digest,
                  sum(len(p.manifest.files) for p in parts),
                  sum(p.manifest.total_bytes for p in parts), extra)


# --- writing ----------------------------------------------------------------------------------

def _meta_blobs(header: Header, parts: list[Part]) -> list[tuple[str, bytes]]:
    out = [(f"{META}/header.json", json.dumps(header.to_json(), indent=1).encode())]
    for p in parts:
        out.append((f"{META}/{p.role}/{MANIFEST}",
                    json.dumps(p.manifest.to_json(), separators=(",", ":")).encode()))
        hits = {"prefix": p.prefix, "files": [{"path": h.path, "kind": h.kind} for h in p.hits]}
        out.append((f"{META}/{p.role}/{PREFIX_FILES}", json.dumps(hits).encode()))
    return out


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


# --- tar headers, written directly (tarfile's own code was most of a pack's CPU time) -------

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


def write_tar(out: IO[bytes], header: Header, parts: list[Part]) -> None:
    """Stream the archive as an uncompressed tar into `out`; checks each file as it reads it.

    The order is deterministic (sorted); files are read by this thread, or ahead of it by a
    few threads where reads are slow (_read_ahead); `out` is written by a thread of its own
    (_Feeder)."""
    feed = _Feeder(out)
    try:
        _write_tar(_TarOut(feed), header, parts)  # type: ignore[arg-type]
    except BaseException:
        feed.abandon()
        raise
    feed.close()


def _write_tar(t: _TarOut, header: Header, parts: list[Part]) -> None:
    for name, blob in _meta_blobs(header, parts):
        t.add(tar_header(name, REGTYPE, 0o644, len(blob)))
        t.add(blob + b"\0" * (-len(blob) % BLOCK))
    for p in parts:
        assert p.source is not None
        src, m = str(p.source), p.manifest
        dirs = sorted(m.dirs)
        modes = _read_ahead(lambda path: os.lstat(path).st_mode,
                            [(f"{src}/{d}", 0) for d in dirs])
        with contextlib.closing(modes):
            for d, mode in zip(dirs, modes, strict=True):
                t.add(tar_header(f"{p.role}/{d}/", DIRTYPE, stat.S_IMODE(mode) | 0o700))
        for rel, target in sorted(m.symlinks.items()):
            t.add(tar_header(f"{p.role}/{rel}", SYMTYPE, 0o777, linkname=target))
        files = sorted(m.files.items())
        reads = _read_ahead(_read_small, [(f"{src}/{rel}", e.size) for rel, e in files])
        with contextlib.closing(reads):
            for (rel, entry), (st, data, digest) in zip(files, reads, strict=True):
                if data is None:
                    path = f"{src}/{rel}"
                    if not stat.S_ISREG(st.st_mode):
                        raise VerifyError(f"{path} changed since its manifest was written "
                                          f"(it is no longer a file); run `sitestack verify`")
                    digest, n = _stream_file(t, f"{p.role}/{rel}", path, entry, st)
                else:
                    n = len(data)
                    if n == entry.size:  # else refused below, before anything is written
                        t.add_member(tar_header(f"{p.role}/{rel}", REGTYPE, entry.mode, n, st.st_mtime_ns),
                                     data)
                if digest != entry.sha256 or n != entry.size:
                    raise VerifyError(f"{src}/{rel} changed since its manifest was written; "
                                      f"run `sitestack verify`")
    t.add(b"\0" * (2 * BLOCK))  # end of archive
    t.flush()


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


def check_output(output: Path, *, make_parent: bool = False) -> Path:
    """Where an archive may be written: a file path in an existing, writable folder.

    Refused up front (exit 2, or 5 when the folder is not writable by this user), before
    any byte is read, so a bad -o never costs a pack of the whole stack."""
    output = Path(os.path.abspath(output))
    parent = output.parent
    if make_parent and not parent.exists():
        from sitestack.core.fsutil import make_dirs

        try:
            make_dirs(parent)  # every missing level 0755 (mkdir's mode skips the parents)
        except PermissionError:
            raise ConflictError(f"cannot create {parent}: not writable by this user") from None
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"cannot create {parent}: a parent is not a folder") from None
    if output.is_dir():
        raise UsageError(f"-o {output} is a folder; give the archive's file name")
    if not parent.exists():
        bad = next((a for a in parent.parents if a.exists() and not a.is_dir()), None)
        if bad is not None:
            raise UsageError(f"-o {output}: {bad} is a file, not a folder")
        raise UsageError(f"-o {output}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"-o {output}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConflictError(f"cannot write {output}: {parent} is not writable by this user")
    return output


def _clear_stale_temps(output: Path) -> None:
    """Temps of packs that were killed (their process is gone on this host): each can be as
    large as the archive, and nothing else would ever remove them."""
    from sitestack.core.publish import clear_stale, pid_alive

    prefix = f".{output.name}.tmp-"
    clear_stale(output.parent, prefix)
    # Names from before temps carried their host: `.NAME.tmp-PID`.
    with contextlib.suppress(OSError):
        for entry in os.scandir(output.parent):
            pid = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def pack(target: str, root: SiteRoot, output: Path, *, fmt: str = "tar.zst",
         layer: str | None = None, level: int = 3, make_parent: bool = False) -> Header:
    from sitestack.core.publish import temp_name

    output = check_output(output, make_parent=make_parent)
    header, parts = resolve(target, root, layer)
    _clear_stale_temps(output)
    tmp = output.with_name(temp_name(f".{output.name}.tmp-"))
    try:
        if fmt == "tar.zst":
            with open(tmp, "wb") as raw:
                zw = _compressor(level).stream_writer(raw, closefd=False)
                write_tar(zw, header, parts)
                zw.close()
        elif fmt == "squashfs":
            _write_squashfs(tmp, header, parts)
        else:
            raise UsageError(f"unknown format {fmt!r} (tar.zst or squashfs)")
        os.chmod(tmp, 0o644)  # whatever the umask: readers may stage it, nobody may edit it
        # A file, not a tree: os.replace is already one atomic step that may overwrite, which
        # core.publish.publish (for folders: swap, then remove the old tree) would only lengthen.
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return header


def _compressor(level: int) -> Any:
    import zstandard

    # write_checksum: a corrupted frame fails in the decoder, before any sha256 check
    return zstandard.ZstdCompressor(level=level, write_checksum=True, threads=-1)


def _write_squashfs(out: Path, header: Header, parts: list[Part]) -> None:
    import shutil

    exe = shutil.which("sqfstar")
    if not exe:
        raise ToolMissingError("sqfstar (squashfs-tools >= 4.5) is needed for --format squashfs")
    # lz4: sqfstar 4.5.1 cannot set a zstd level (-X options misparse), and its default
    # zstd level takes 30x longer to pack than lz4.
    proc = subprocess.Popen([exe, "-quiet", "-no-progress", "-comp", "lz4", "-force", "-no-xattrs",
                             "-force-uid", "0", "-force-gid", "0", str(out)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        write_tar(proc.stdin, header, parts)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise ArchiveError(f"sqfstar failed: {err.strip()[-400:]}")


def stream_chunks(target: str, root: SiteRoot, layer: str | None, chunk: int,
                  level: int = STREAM_LEVEL) -> tuple[Header, Iterator[bytes]]:
    """Resolve now; then yield the tar.zst in chunks, produced by a thread as they are read."""
    import queue

    header, parts = resolve(target, root, layer)
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()

    class _Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            if stop.is_set():
                raise BrokenPipeError("consumer went away")
            self.buf += b
            while len(self.buf) >= chunk:
                q.put(bytes(self.buf[:chunk]))
                del self.buf[:chunk]
            return len(b)

    def produce() -> None:
        sink = _Sink()
        try:
            zw = _compressor(level).stream_writer(sink, closefd=False)
            write_tar(zw, header, parts)
            zw.close()
            if sink.buf:
                q.put(bytes(sink.buf))
            q.put(None)
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(e)

    def gen() -> Iterator[bytes]:
        t = threading.Thread(target=produce, daemon=True)
        t.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    return header, gen()
