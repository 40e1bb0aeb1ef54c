"""The squashfs image `stage --mount` mounts: made once, relocated for its mount path, and
checked chunk by chunk on every node.

A mounted image cannot be relocated, so an image is made for one path: the staged copy
DIR/sitestack/<name>-<version>-<hash> of the folder DIR that `stage --to DIR` will be given
(`pack --format squashfs --to DIR`, or rank 0 on the fly). It is made the way a node makes an
extracted copy -- the archive extracted with every file checked against its manifest
(unpack.py), relocated to that path, `activate` and the marker written (staged.py) -- and
that tree is packed with mksquashfs (zstd).

File layout: the squashfs image itself, then a trailer: a JSON table, then 16 bytes
(``SSIMAGE1`` and the table's length, little-endian). The table holds the archive header,
the mount path, the image's size, and the sha256 of each CHUNK-byte piece of the image (and
the sha256 of those digests, the image's identity). Squashfs ignores what follows its own
bytes, so the file mounts as it is; a node receives and writes only the image, and checks
every chunk while it arrives (in parallel) and again, read back from its disk, before it is
mounted. Everything in a table read from disk is checked for shape before it is used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import struct
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.errors import ArchiveError, ToolMissingError, VerifyError
from sitestack.scale.pack import HASH_RE, SQUASHFS_MAGIC, Header
from sitestack.scale.staged import STAGE_DIR, base_dir

MAGIC = b"SSIMAGE1"
FOOTER = struct.Struct("<8sQ")
CHUNK = 2 << 20  # bytes per checked piece: 8 of them fill 8 hashing threads per 16 MiB broadcast chunk
MAX_TABLE = 64 << 20
MAX_JOBS = 8


def jobs() -> int:
    return max(2, min(MAX_JOBS, os.cpu_count() or 2))


def _sha(data: Any) -> str:
    return hashlib.sha256(data).hexdigest()  # releases the GIL: threads hash in parallel


def table_digest(chunks: list[str] | tuple[str, ...]) -> str:
    return _sha(b"".join(bytes.fromhex(c) for c in chunks))


@dataclass(frozen=True)
class Image:
    header: Header
    mount: str  # the path the image was relocated for: DIR/sitestack/<id>
    size: int  # bytes of the squashfs image; the trailer follows
    chunk: int
    chunks: tuple[str, ...]
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"format": "sitestack-image", "format_version": 1, "header": self.header.to_json(),
                "mount": self.mount, "size": self.size, "chunk": self.chunk,
                "chunks": list(self.chunks), "sha256": self.digest}

    @classmethod
    def from_json(cls, d: Any) -> Image:
        try:
            return cls._from_json(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise VerifyError(f"image table is corrupt ({type(e).__name__}: {e})") from None

    @classmethod
    def _from_json(cls, d: Any) -> Image:
        if not isinstance(d, dict) or d.get("format") != "sitestack-image":
            raise VerifyError("not a sitestack image (no sitestack table)")
        if d.get("format_version") != 1:
            raise VerifyError(f"image table version {d.get('format_version')!r} is not 1: "
                              "made by another sitestack")
        header = Header.from_json(d["header"])
        mount, size, chunk = d["mount"], d["size"], d["chunk"]
        if not (isinstance(mount, str) and mount.startswith("/") and posixpath.normpath(mount) == mount
                and mount.endswith(f"/{STAGE_DIR}/{header.dirname}")
                and not any(c in mount for c in "'\"\\") and mount.isprintable()):
            raise VerifyError(f"image table has a bad mount path: {mount!r}")
        if not (type(size) is int and type(chunk) is int and size > 0 and 4096 <= chunk <= 1 << 30):
            raise VerifyError(f"image table has a bad size or chunk size: {size!r}, {chunk!r}")
        chunks = d["chunks"]
        if (not isinstance(chunks, list) or len(chunks) != -(-size // chunk)
                or not all(isinstance(c, str) and HASH_RE.fullmatch(c) for c in chunks)):
            raise VerifyError("image table has a bad list of chunk sha256s")
        if d["sha256"] != table_digest(chunks):
            raise VerifyError("image table's sha256 is not that of its chunks: the table is corrupt")
        return cls(header, mount, size, chunk, tuple(chunks), d["sha256"])

    def span(self, k: int) -> tuple[int, int]:
        return k * self.chunk, min((k + 1) * self.chunk, self.size)

    def check(self, k: int, digest: str) -> None:
        if digest != self.chunks[k]:
            start, end = self.span(k)
            raise VerifyError(f"image chunk {k + 1} of {len(self.chunks)} (bytes {start}-{end - 1}) "
                              "does not match its sha256: the image is corrupt")


def read_image(path: Path) -> Image:
    """The table of an image file, from its trailer; the file must end where the table says."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        if f.read(4) != SQUASHFS_MAGIC or total < FOOTER.size:
            raise VerifyError(f"{path}: not a squashfs image")
        f.seek(total - FOOTER.size)
        magic, length = FOOTER.unpack(f.read(FOOTER.size))
        if magic != MAGIC:
            raise VerifyError(f"{path}: a squashfs image without a sitestack table (made by an older "
                              "sitestack, or by hand): pack it again with `sitestack pack --format "
                              "squashfs --to DIR`")
        if length > min(MAX_TABLE, total - FOOTER.size):
            raise VerifyError(f"{path}: the image table's length is corrupt")
        f.seek(total - FOOTER.size - length)
        raw = f.read(length)
    try:
        img = Image.from_json(json.loads(raw))
    except ValueError as e:
        raise VerifyError(f"{path}: the image table is corrupt: {e}") from None
    if img.size + length + FOOTER.size != total:
        raise VerifyError(f"{path}: the image table says {img.size} bytes of image, the file "
                          f"holds {total - length - FOOTER.size}")
    return img


def read_header(archive: Path) -> tuple[str, Header]:
    """(format, header) of a tar.zst archive or a squashfs image, reading its start (or trailer)."""
    from sitestack.scale.members import detect_format, read_tar_header

    with open(archive, "rb") as f:
        fmt = detect_format(f.read(4))
    return fmt, (read_image(archive).header if fmt == "squashfs" else read_tar_header(archive))


def hash_file(fd: int, size: int, chunk: int, pool: ThreadPoolExecutor) -> list[str]:
    def one(k: int) -> str:
        start = k * chunk
        data = os.pread(fd, min(chunk, size - start), start)
        return _sha(data)

    return list(pool.map(one, range(-(-size // chunk))))


def check_file(path: Path, img: Image) -> None:
    """The whole image, read back from this node's disk, against every chunk sha256 again."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size != img.size:
            raise VerifyError(f"the image on disk has {size} bytes, not {img.size}: the image is corrupt")
        with ThreadPoolExecutor(jobs(), thread_name_prefix="sitestack-check") as pool:
            for k, digest in enumerate(hash_file(fd, size, img.chunk, pool)):
                img.check(k, digest)
    finally:
        os.close(fd)


def receive(chunks: Iterator[memoryview], path: Path, img: Image) -> None:
    """Write the image to `path` (a new file) as its bytes arrive, each CHUNK checked against
    its sha256 in parallel while the piece is written; refused at the first bad chunk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with ThreadPoolExecutor(jobs(), thread_name_prefix="sitestack-hash") as pool:
            _receive(chunks, fd, img, pool)
    finally:
        os.close(fd)


def _receive(chunks: Iterator[memoryview], fd: int, img: Image, pool: ThreadPoolExecutor) -> None:
    offset = 0
    partial: tuple[int, Any] | None = None  # a chunk that spans two pieces: hashed in order
    for piece in chunks:
        end = offset + len(piece)
        if end > img.size:
            raise VerifyError(f"the image is longer than its table says ({img.size} bytes): "
                              "the image is corrupt")
        jobs_: list[tuple[int, Future[str]]] = []
        pos = 0
        while pos < len(piece):
            k = (offset + pos) // img.chunk
            start, stop = img.span(k)
            take = min(stop - (offset + pos), len(piece) - pos)
            if offset + pos == start and take == stop - start:
                jobs_.append((k, pool.submit(_sha, piece[pos : pos + take])))
            else:
                if partial is None or partial[0] != k:
                    partial = (k, hashlib.sha256())
                partial[1].update(piece[pos : pos + take])
                if offset + pos + take == stop:
                    img.check(k, partial[1].hexdigest())
                    partial = None
            pos += take
        view = piece
        while len(view):
            view = view[os.write(fd, view):]
        for k, fut in jobs_:
            img.check(k, fut.result())
        offset = end
    if offset != img.size:
        raise VerifyError(f"the image ends after {offset} of its {img.size} bytes: it is truncated")


def mount_path(to: str, header: Header) -> str:
    """Where an image of `header` for `stage --to TO` is mounted (and what it is relocated for)."""
    return str(base_dir(to, "") / header.dirname)


def make_image(header: Header, tar_chunks: Iterator[bytes], out: Path, mount: str, *,
               level: int, work: Path) -> Image:
    """Extract the tar.zst stream `tar_chunks` of `header`'s content (every file checked),
    relocate it for `mount`, pack it into the image `out` and append its table."""
    import shutil

    from sitestack.core.fsutil import rmtree
    from sitestack.core.publish import clear_stale, make_temp
    from sitestack.scale.mpibcast import ChunkReader
    from sitestack.scale.staged import finish_copy
    from sitestack.scale.unpack import unpack_tar

    exe = shutil.which("mksquashfs")
    if exe is None:
        raise ToolMissingError("mksquashfs is needed to make a squashfs image (Debian/Ubuntu "
                               "package: squashfs-tools)")
    clear_stale(work, ".tmp-image-")  # trees of killed runs on this host
    tmp = make_temp(work, ".tmp-image-", 0o700)
    try:
        u = unpack_tar(ChunkReader(memoryview(c) for c in tar_chunks), tmp)  # type: ignore[arg-type]
        if u.header.content_hash != header.content_hash:
            raise VerifyError("archive content does not match its header")
        finish_copy(tmp, Path(mount), u)
        r = subprocess.run([exe, str(tmp), str(out), "-noappend", "-no-xattrs", "-quiet",
                            "-no-progress", "-comp", "zstd", "-Xcompression-level", str(level)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            err = (r.stderr or r.stdout).strip()
            if "No space left" in err:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
            raise ArchiveError(f"mksquashfs failed: {err[-400:]}")
    finally:
        rmtree(tmp)
    return append_table(out, header, mount)


def append_table(out: Path, header: Header, mount: str) -> Image:
    """Hash the squashfs image `out` chunk by chunk and append its table."""
    fd = os.open(out, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        with ThreadPoolExecutor(jobs()) as pool:
            chunks = hash_file(fd, size, CHUNK, pool)
        img = Image(header, mount, size, CHUNK, tuple(chunks), table_digest(chunks))
        table = json.dumps(img.to_json()).encode()
        os.lseek(fd, 0, os.SEEK_END)
        data = memoryview(table + FOOTER.pack(MAGIC, len(table)))
        while len(data):
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    return img
