"""Pack a stack (or a layer with its stack) into one archive (reading it: unpack.py).

Archive layout (tar.zst; a squashfs image for `stage --mount` is made from it: image.py):
    .sitestack-pack/header.json              name, version, kind, prefixes, python_xy, content hash
    .sitestack-pack/<role>/manifest.json     sha256 of every file of that part
    .sitestack-pack/<role>/prefix-files.json files that name the part's original prefix
    <role>/...                               the part's files; role is "stack" or "layer"
The metadata comes first, so an extractor checks every file against its manifest while it
writes it, and relocation at the destination needs nothing but the archive.

The tar stream itself is written by tarwriter.py and read by tarstream.py.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import posixpath
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sitestack import __version__
from sitestack.core import pyvenv
from sitestack.core.checked import Checked
from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import Manifest, PrefixHit, load_prefix_files, scan
from sitestack.core.records import MANIFEST, PREFIX_FILES
from sitestack.errors import ConflictError, UsageError, VerifyError
from sitestack.scale import tarwriter

META = ".sitestack-pack"
ROLES = ("stack", "layer")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SQUASHFS_MAGIC = b"hsqs"
STREAM_LEVEL = 1  # packing on the fly for stage: compression speed is on the critical path
HASH_RE = re.compile(r"[0-9a-f]{64}")
XY_RE = re.compile(r"3\.[0-9]{1,3}")


@dataclass(frozen=True)
class Part:
    role: str  # "stack" | "layer"
    prefix: str  # the original absolute prefix
    manifest: Manifest
    hits: tuple[PrefixHit, ...]
    source: Path | None = None  # where the files are, at pack time only
    checked: Checked | None = None  # a published stack's files known to hold checked bytes
    records_json: bytes | None = None  # the records' manifest.json, when it is canonical JSON

    @functools.cached_property
    def manifest_json(self) -> bytes:
        """Made once: it is both hashed into the header and packed. The records' own bytes
        where build wrote them in the canonical form (serializing 13,000 entries again took
        45 ms before the first byte was packed); unpack hashes the bytes it receives."""
        return self.records_json if self.records_json is not None else self.manifest.canonical_json()


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


def content_hash(parts: list[tuple[str, str, Manifest | bytes]]) -> str:
    """The content hash of (role, original prefix, manifest or the JSON bytes it is packed
    as) parts.

    pack writes it into the header; unpack computes it again from the bytes of the manifests
    it checked every received file against, so a header cannot claim another stack's hash."""
    h = hashlib.sha256()
    for role, prefix, m in parts:
        mjson = m if isinstance(m, bytes) else m.canonical_json()
        # for a canonical manifest: the bytes of json.dumps([role, prefix, manifest.to_json()], sort_keys=True)
        h.update(f"[{json.dumps(role)}, {json.dumps(prefix)}, ".encode())
        h.update(mjson)
        h.update(b"]")
    return h.hexdigest()


# What Manifest.canonical_json writes starts and ends so; older records are compact JSON.
_CANONICAL_START, _CANONICAL_END = b'{"algorithm": "sha256", "dirs": [', b"}"


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
            data = (recs / MANIFEST).read_bytes()
            manifest = Manifest.parse(data, recs / MANIFEST)
            blob = data.rstrip(b"\n")
            canonical = blob.startswith(_CANONICAL_START) and blob.endswith(_CANONICAL_END)
            checked = None
            site = SiteRoot(Path(rec.root))
            if site.prefix(rec.name, rec.version) == prefix:  # the site's own stack: its state
                checked = Checked.load(site.checked(rec.name, rec.version),
                                       hashlib.sha256(data).hexdigest(), len(manifest.files))
            return Part(role, str(prefix), manifest, tuple(hits), prefix, checked,
                        blob if canonical else None), info
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
    digest = content_hash([(p.role, p.prefix, p.manifest_json) for p in parts])
    extra = {"layer_name": Path(parts[1].prefix).name} if len(parts) > 1 else {}
    return Header(info["name"], info["version"], "layer" if len(parts) > 1 else "stack",
                  info["python_xy"], {p.role: p.prefix for p in parts}, digest,
                  sum(len(p.manifest.files) for p in parts),
                  sum(p.manifest.total_bytes for p in parts), extra)


# --- writing ----------------------------------------------------------------------------------

def _meta_blobs(header: Header, parts: list[Part]) -> list[tuple[str, bytes]]:
    out = [(f"{META}/header.json", json.dumps(header.to_json(), indent=1).encode())]
    for p in parts:
        out.append((f"{META}/{p.role}/{MANIFEST}", p.manifest_json))
        hits = {"prefix": p.prefix, "files": [{"path": h.path, "kind": h.kind} for h in p.hits]}
        out.append((f"{META}/{p.role}/{PREFIX_FILES}", json.dumps(hits).encode()))
    return out


def write_tar(out: IO[bytes], header: Header, parts: list[Part]) -> None:
    """Stream the archive as an uncompressed tar into `out` (tarwriter.write_tar: the metadata
    first, then each part's tree, every file checked against its manifest as it is read).
    Once every file has matched, a published stack's site state keeps which did (core.checked)."""
    import time

    assert all(p.source is not None for p in parts)
    checked = {p.role: p.checked for p in parts if p.checked is not None}
    for c in checked.values():
        c.start(time.time_ns())
    tarwriter.write_tar(out, _meta_blobs(header, parts), [(p.role, str(p.source), p.manifest) for p in parts],
                        checked)
    for c in checked.values():
        c.save()


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


def pack(target: str, root: SiteRoot, output: Path, *, layer: str | None = None, level: int = 3,
         make_parent: bool = False) -> Header:
    """Pack `target` (and `layer`) into the tar.zst `output`."""
    def write(tmp: Path) -> Header:
        header, parts = resolve(target, root, layer)
        with open(tmp, "wb") as raw:
            zw = _compressor(level).stream_writer(raw, closefd=False)
            write_tar(zw, header, parts)
            zw.close()
        return header

    return write_output(output, write, make_parent=make_parent)


def write_output(output: Path, write: Callable[[Path], Header], *, make_parent: bool = False) -> Header:
    """Write an archive to `output` through a temp file beside it, renamed into place once
    complete: a killed pack never leaves a partial archive under the final name."""
    from sitestack.core.publish import temp_name

    output = check_output(output, make_parent=make_parent)
    _clear_stale_temps(output)
    tmp = output.with_name(temp_name(f".{output.name}.tmp-"))
    try:
        header = write(tmp)
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
