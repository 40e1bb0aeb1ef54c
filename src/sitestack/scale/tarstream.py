"""A streaming reader of the tar subset `tarwriter.write_tar` writes: POSIX ustar headers, each
optionally preceded by a pax 'x' header (path, linkpath, size, mtime). Header checksums are
checked; a stream that ends inside a header or a member is refused as truncated. Type flags
are reported as they are; unpack.py decides what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable

from sitestack.errors import VerifyError

BLOCK = 512
MAX_READ = 8 << 20  # the largest single read when skipping or draining
READ_BLOCK = 1 << 20  # decompressed bytes taken from the source at a time
MAX_PAX = 1 << 20
MAX_META = 256 << 20  # a manifest of a million files is ~150 MB
NUL = b"\0"

# tar type flags (POSIX): the few a sitestack archive holds, and the ones refused by name
REGULAR, CONTIGUOUS, HARDLINK, SYMLINK, DIRECTORY, PAX = b"0", b"7", b"1", b"2", b"5", b"x"
SPECIAL = {b"3", b"4", b"6"}  # character device, block device, FIFO


class Member:
    __slots__ = ("name", "type", "size", "mode", "mtime_ns", "linkname")

    def __init__(self, name: str, type_: bytes, size: int, mode: int, mtime_ns: int,
                 linkname: str) -> None:
        self.name, self.type, self.size = name, type_, size
        self.mode, self.mtime_ns, self.linkname = mode, mtime_ns, linkname


def _num(field: bytes, what: str) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # base-256 (GNU): only for sizes no sitestack writes
        raise VerifyError(f"archive is corrupt: unsupported base-256 {what} in a tar header")
    s = field.split(NUL, 1)[0].strip()
    try:
        return int(s, 8) if s else 0
    except ValueError:
        raise VerifyError(f"archive is corrupt: bad {what} in a tar header") from None


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _mtime_ns(s: str) -> int:
    whole, _, frac = s.strip().partition(".")
    try:
        sec, part = int(whole or "0"), int((frac + "000000000")[:9] or "0")
    except ValueError:
        raise VerifyError("archive is corrupt: bad mtime in a pax header") from None
    return sec * 1_000_000_000 + (-part if whole.startswith("-") else part)


def _pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        sp = data.find(b" ", pos)
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise VerifyError("archive is corrupt: bad pax header") from None
        rec = data[sp + 1 : pos + length]
        if sp < 0 or length <= 0 or pos + length > len(data) or not rec.endswith(b"\n"):
            raise VerifyError("archive is corrupt: bad pax header")
        key, eq, value = rec[:-1].partition(b"=")
        if not eq:
            raise VerifyError("archive is corrupt: bad pax header")
        out[_text(key)] = _text(value)
        pos += length
    return out


class _Blocks:
    """read(n) -> up to n bytes, served from large reads of the source (few calls into zstd);
    small reads are zero-copy views of the current block."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._source, self._block, self._pos = read, memoryview(b""), 0

    def read(self, n: int) -> bytes | memoryview:
        if self._pos >= len(self._block):
            if n >= READ_BLOCK:
                return self._source(n)
            self._block, self._pos = memoryview(self._source(READ_BLOCK)), 0
        end = min(self._pos + n, len(self._block))
        out = self._block[self._pos : end]
        self._pos = end
        return out


class TarReader:
    """Members of a tar stream; `read(n)` returns up to n bytes (b"" at the end)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = _Blocks(read).read

    def upto(self, n: int) -> bytes | memoryview:
        """n bytes, or fewer only where the stream ends."""
        data = self._read(n)
        if len(data) == n or not data:
            return data
        parts, got = [data], len(data)
        while got < n and (more := self._read(n - got)):
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def exact(self, n: int) -> bytes | memoryview:
        data = self.upto(n)
        if len(data) != n:
            raise VerifyError("archive is truncated: the stream ends inside a member")
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            n -= len(self.exact(min(n, MAX_READ)))

    def drain(self) -> None:
        """Read the stream to its end (the zstd frame checksum is checked there)."""
        while self._read(MAX_READ):
            pass

    def next(self) -> Member | None:
        pax: dict[str, str] = {}
        while True:
            buf = bytes(self.upto(BLOCK))
            if len(buf) < BLOCK:
                if buf or pax:
                    raise VerifyError("archive is truncated: the stream ends inside a header")
                return None  # no end-of-archive blocks: the manifest check finds what is missing
            if buf.count(NUL) == BLOCK:
                if pax:
                    raise VerifyError("archive is truncated: a pax header has no member")
                return None
            chksum = _num(buf[148:156], "checksum")
            if chksum != sum(buf[:148]) + 256 + sum(buf[156:]):
                raise VerifyError("archive is corrupt: bad tar header checksum")
            type_ = buf[156:157]
            size = _num(buf[124:136], "size")
            if type_ == PAX:
                if size > MAX_PAX:
                    raise VerifyError("archive is corrupt: pax header too large")
                pax.update(_pax(bytes(self.exact(-(-size // BLOCK) * BLOCK)[:size])))
                continue
            name = _text(buf[0:100].split(NUL, 1)[0])
            if buf[257:263] == b"ustar\0" and buf[345] != 0:
                name = _text(buf[345:500].split(NUL, 1)[0]) + "/" + name
            linkname = _text(buf[157:257].split(NUL, 1)[0])
            mtime_ns = _num(buf[136:148], "mtime") * 1_000_000_000
            if pax:
                name = pax.get("path", name)
                linkname = pax.get("linkpath", linkname)
                if "size" in pax:
                    try:
                        size = int(pax["size"])
                    except ValueError:
                        raise VerifyError("archive is corrupt: bad size in a pax header") from None
                if "mtime" in pax:
                    mtime_ns = _mtime_ns(pax["mtime"])
            if type_ == NUL:
                type_ = REGULAR
            if type_ == REGULAR and name.endswith("/"):
                type_ = DIRECTORY
            if type_ not in (REGULAR, CONTIGUOUS):
                size = 0  # as tarfile: links, folders and devices have no data; others are refused
            return Member(name, type_, size, _num(buf[100:108], "mode"), mtime_ns, linkname)

    def read_meta(self, m: Member) -> bytes:
        if m.size > MAX_META:
            raise VerifyError(f"archive metadata {m.name} is too large")
        return bytes(self.exact(-(-m.size // BLOCK) * BLOCK)[: m.size])
