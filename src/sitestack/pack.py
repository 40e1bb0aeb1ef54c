"""Pack a stack (or a layer with its stack) into one archive; unpack it safely.

Archive layout (tar.zst; squashfs holds the same tree):
    .sitestack-pack/header.json              name, version, kind, prefixes, python_xy, content hash
    .sitestack-pack/<role>/manifest.json     sha256 of every file of that part
    .sitestack-pack/<role>/prefix-files.json files that name the part's original prefix
    <role>/...                               the part's files; role is "stack" or "layer"
The metadata comes first, so an extractor checks every file against its manifest while it
writes it, and relocation at the destination needs nothing but the archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import __version__
from .errors import ConflictError, ToolMissingError, UsageError, VerifyError
from .layout import SiteRoot
from .manifest import Manifest, PrefixHit, load_prefix_files, scan

META = ".sitestack-pack"
ROLES = ("stack", "layer")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SQUASHFS_MAGIC = b"hsqs"
MAX_META = 256 << 20  # a manifest of a million files is ~150 MB


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
        if d.get("format") != "sitestack-pack":
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
        known = {"name", "version", "kind", "python_xy", "prefixes", "content_hash", "files", "bytes"}
        return cls(str(d["name"]), str(d["version"]), str(d["kind"]), str(d["python_xy"]),
                   prefixes, str(d["content_hash"]), int(d["files"]), int(d["bytes"]),
                   {k: v for k, v in d.items() if k not in known})


def _safe_component(s: str) -> bool:
    return bool(s) and "/" not in s and s not in (".", "..") and "\0" not in s


# --- what to pack ---------------------------------------------------------------------------

def _python_xy(prefix: Path) -> str | None:
    for p in sorted((prefix / "bin").glob("python3.*")):
        xy = p.name[len("python"):]
        if xy.replace(".", "").isdigit() and (prefix / "lib" / f"python{xy}").is_dir():
            return xy
    return None


def _read_cfg(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def prefix_part(prefix: Path, role: str = "stack") -> tuple[Part, dict[str, Any]]:
    """A stack or clone prefix; uses its records when they describe this very path."""
    from .site import Site

    prefix = Path(os.path.abspath(prefix))
    rec = Site.from_prefix(prefix)
    recs = prefix / ".sitestack"
    # A published stack is read-only and its records name this very path: trust them (every
    # file is still checked against them as it is read). A clone is writable: hash it now.
    if (rec is not None and not os.lstat(prefix).st_mode & 0o222
            and (recs / "manifest.json").is_file() and (recs / "prefix-files.json").is_file()):
        old, hits = load_prefix_files(recs / "prefix-files.json")
        if old == str(prefix):
            info = {"name": rec.name, "version": rec.version, "python_xy": rec.python_xy}
            return Part(role, str(prefix), Manifest.load(recs / "manifest.json"), tuple(hits),
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
    cfg = layer / "pyvenv.cfg"
    if not cfg.is_file():
        raise UsageError(f"{layer} is not a layer (no pyvenv.cfg)")
    home = _read_cfg(cfg).get("home")
    if not home:
        raise UsageError(f"{cfg} has no 'home' line")
    stack = Path(home).parent
    manifest, hits = scan(layer, [str(layer), str(stack)], exclude=())
    return Part("layer", str(layer), manifest, tuple(hits), layer), stack


def resolve(target: str, root: SiteRoot, layer: str | None = None) -> tuple[Header, list[Part]]:
    """TARGET is NAME[/VERSION], a stack or clone prefix, or a layer; --layer adds a layer."""
    from .site import Site

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
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps([p.role, p.prefix, p.manifest.to_json()], sort_keys=True).encode())
    extra = {"layer_name": Path(parts[1].prefix).name} if len(parts) > 1 else {}
    return Header(info["name"], info["version"], "layer" if len(parts) > 1 else "stack",
                  info["python_xy"], {p.role: p.prefix for p in parts}, h.hexdigest(),
                  sum(len(p.manifest.files) for p in parts),
                  sum(p.manifest.total_bytes for p in parts), extra)


# --- writing ----------------------------------------------------------------------------------

def _meta_blobs(header: Header, parts: list[Part]) -> list[tuple[str, bytes]]:
    out = [(f"{META}/header.json", json.dumps(header.to_json(), indent=1).encode())]
    for p in parts:
        out.append((f"{META}/{p.role}/manifest.json",
                    json.dumps(p.manifest.to_json(), separators=(",", ":")).encode()))
        hits = {"prefix": p.prefix, "files": [{"path": h.path, "kind": h.kind} for h in p.hits]}
        out.append((f"{META}/{p.role}/prefix-files.json", json.dumps(hits).encode()))
    return out


class _HashingReader(io.RawIOBase):
    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)  # type: ignore[attr-defined]
        self.h.update(memoryview(b)[:n])
        self.n += n
        return int(n)


def write_tar(out: IO[bytes], header: Header, parts: list[Part]) -> None:
    """Stream the archive as an uncompressed tar into `out`; checks each file as it reads it."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for name, blob in _meta_blobs(header, parts):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(blob), 0o644
            tf.addfile(ti, io.BytesIO(blob))
        for p in parts:
            assert p.source is not None
            src, m = p.source, p.manifest
            for d in sorted(m.dirs):
                ti = tarfile.TarInfo(f"{p.role}/{d}")
                ti.type, ti.mode = tarfile.DIRTYPE, stat.S_IMODE(os.lstat(src / d).st_mode) | 0o700
                tf.addfile(ti)
            for rel, target in sorted(m.symlinks.items()):
                ti = tarfile.TarInfo(f"{p.role}/{rel}")
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
                tf.addfile(ti)
            for rel, entry in sorted(m.files.items()):
                path = src / rel
                st = os.lstat(path)
                ti = tarfile.TarInfo(f"{p.role}/{rel}")
                # mtime matters: a .pyc is valid only while its source keeps size and mtime
                ti.size, ti.mode, ti.mtime = st.st_size, entry.mode, st.st_mtime
                with open(path, "rb") as f:
                    r = _HashingReader(f)
                    tf.addfile(ti, r)
                if r.h.hexdigest() != entry.sha256 or r.n != entry.size:
                    raise VerifyError(f"{path} changed since its manifest was written; "
                                      "run `sitestack verify`")


def pack(target: str, root: SiteRoot, output: Path, *, fmt: str = "tar.zst",
         layer: str | None = None, level: int = 3) -> Header:
    header, parts = resolve(target, root, layer)
    output = Path(os.path.abspath(output))
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
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
        raise ConflictError(f"sqfstar failed: {err.strip()[-400:]}")


def stream_chunks(target: str, root: SiteRoot, layer: str | None, chunk: int,
                  level: int = 3) -> tuple[Header, Iterator[bytes]]:
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


# --- reading ----------------------------------------------------------------------------------

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
        with open(archive, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z, \
                tarfile.open(fileobj=z, mode="r|") as tf:
            m = tf.next()
            if m is None or m.name != f"{META}/header.json" or not m.isreg():
                raise VerifyError(f"{archive}: not a sitestack archive (no header first)")
            data = tf.extractfile(m).read(MAX_META)  # type: ignore[union-attr]
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as e:
        raise VerifyError(f"{archive}: archive is corrupt: {e}") from None
    return fmt, Header.from_json(json.loads(data))


@dataclass
class Unpacked:
    header: Header
    manifests: dict[str, Manifest]
    hits: dict[str, list[PrefixHit]]


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


def unpack_tar(fileobj: IO[bytes], dest: Path) -> Unpacked:
    """Extract a sitestack tar.zst stream into dest (which must exist and be empty).

    Every member is checked before it is written; every file is hashed while it is written
    and compared with the manifest. Raises VerifyError on anything unsafe or changed.
    """
    import zstandard

    try:
        with zstandard.ZstdDecompressor().stream_reader(fileobj, closefd=False) as z, \
                tarfile.open(fileobj=z, mode="r|") as tf:
            return _unpack_members(tf, dest)
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as e:
        raise VerifyError(f"archive is corrupt: {e}") from None


def _unpack_members(tf: tarfile.TarFile, dest: Path) -> Unpacked:
    header: Header | None = None
    manifests: dict[str, Manifest] = {}
    hits: dict[str, list[PrefixHit]] = {}
    seen: set[str] = set()
    links: set[str] = set()
    dest_fd_root = str(dest)
    for m in tf:
        name = m.name.rstrip("/")
        check_name(name)
        if name in seen:
            raise VerifyError(f"unsafe archive: {name} appears twice")
        seen.add(name)
        if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
            raise VerifyError(f"unsafe archive: device or special file {name}")
        if m.islnk():
            raise VerifyError(f"unsafe archive: hard link {name}")
        if header is None:
            if name != f"{META}/header.json" or not m.isreg():
                raise VerifyError("not a sitestack archive (no header first)")
            header = Header.from_json(json.loads(_read_member(tf, m)))
            continue
        role, _, rel = name.partition("/")
        if role == META:
            if name == META:
                continue
            r, _, what = rel.partition("/")
            if r not in header.prefixes or not m.isreg():
                raise VerifyError(f"unexpected archive member {name}")
            data = json.loads(_read_member(tf, m))
            if what == "manifest.json":
                manifests[r] = Manifest.from_json(data)
            elif what == "prefix-files.json":
                hits[r] = [PrefixHit(e["path"], e["kind"]) for e in data["files"]]
            continue
        if role not in manifests:
            raise VerifyError(f"archive member {name} comes before its manifest")
        man = manifests[role]
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise VerifyError(f"unsafe archive: {name} is below a symlink")
        path = os.path.join(dest_fd_root, name)
        if not rel:
            if not m.isdir():
                raise VerifyError(f"unexpected archive member {name}")
            os.makedirs(path, 0o755, exist_ok=True)
        elif m.isdir():
            if rel not in man.dirs:
                raise VerifyError(f"archive folder {name} is not in its manifest")
            os.makedirs(path, 0o755, exist_ok=True)
        elif m.issym():
            if man.symlinks.get(rel) != m.linkname:
                raise VerifyError(f"archive symlink {name} does not match its manifest")
            check_link(role, rel, m.linkname, header)
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            os.symlink(m.linkname, path)
            links.add(name)
        elif m.isreg():
            entry = man.files.get(rel)
            if entry is None:
                raise VerifyError(f"archive file {name} is not in its manifest")
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            _write_checked(tf, m, path, entry.sha256, entry.size, name)
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


def _read_member(tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    if m.size > MAX_META:
        raise VerifyError(f"archive metadata {m.name} is too large")
    f = tf.extractfile(m)
    assert f is not None
    return f.read()


def _write_checked(tf: tarfile.TarFile, m: tarfile.TarInfo, path: str, sha: str, size: int,
                   name: str) -> None:
    src = tf.extractfile(m)
    assert src is not None
    h = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    if m.size != size or h.hexdigest() != sha:
        raise VerifyError(f"sha256 mismatch for {name}: the archive is corrupt")
    os.chmod(path, (m.mode & 0o7777) & ~0o7000 | 0o600)  # no setuid/setgid from an archive
    os.utime(path, (m.mtime, m.mtime))


def unpack_squashfs(image: Path, dest: Path) -> Unpacked:
    """Check a squashfs image's listing, extract it, then hash every file against its manifest."""
    import shutil

    from .manifest import verify, walk

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
        manifests[role] = Manifest.load(out / META / role / "manifest.json")
        hits[role] = load_prefix_files(out / META / role / "prefix-files.json")[1]
        root = out / role
        files, syms, _dirs = walk(root, ())
        for rel in files + syms:
            st = os.lstat(root / rel)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise VerifyError(f"unsafe archive: special file {role}/{rel}")
            if stat.S_ISLNK(st.st_mode):
                check_link(role, rel, os.readlink(root / rel), header)
        problems = verify(root, manifests[role], exclude=())
        if problems:
            p = problems[0]
            raise VerifyError(f"sha256 check failed for {role}/{p.path} ({p.problem}) and "
                              f"{len(problems) - 1} more: the archive is corrupt")
        os.rename(root, dest / role)
    from .fsutil import rmtree

    rmtree(out)
    return Unpacked(header, manifests, hits)

