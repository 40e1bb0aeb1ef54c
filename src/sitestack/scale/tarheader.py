"""tar headers for tarwriter.py: POSIX ustar blocks, each preceded by a pax 'x' header only
for what ustar cannot hold. Built here, not by tarfile, whose header code was most of a pack's
CPU time; tarstream.py reads them back.
"""

from __future__ import annotations

import functools
import struct

BLOCK = 512  # tar block
REGTYPE, LNKTYPE, SYMTYPE, DIRTYPE = b"0", b"1", b"2", b"5"

_USTAR = struct.Struct("100s8s16s12s12s8sc100s255s")  # name mode uid+gid size mtime chksum type link rest
_USTAR_REST = b"ustar\x0000"  # then uname, gname, devmajor, devminor, prefix: all empty (NUL)
_IDS = b"0000000\x000000000\x00"  # uid, gid 0: the unpacking user owns what it extracts
_SUM = sum(_IDS) + sum(_USTAR_REST) + 8 * ord(" ")  # the fixed fields' share of each checksum
_MAX_OCTAL_12 = 8 ** 11  # the largest size or mtime a ustar field holds, plus one


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode("utf-8", "surrogateescape")
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _ustar(name: bytes, type_: bytes, mode: int, size: int, mtime: int, linkname: bytes) -> bytes:
    m, z, t = b"%07o" % (mode & 0o7777), b"%011o" % size, b"%011o" % mtime
    # The checksum is the sum of the block's bytes: of the fields that vary, plus a constant
    # (summing all 512 bytes was a third of a header's cost).
    chksum = _SUM + type_[0] + sum(name) + sum(m) + sum(z) + sum(t) + sum(linkname)
    return _USTAR.pack(name, m, _IDS, z, t, b"%06o\0 " % chksum, type_, linkname, _USTAR_REST)


@functools.lru_cache(maxsize=256)
def _pax_block(size: int) -> bytes:
    return _ustar(b"././@PaxHeader", b"x", 0o644, size, 0, b"")


_PAX_MTIME = _pax_block(30)
_PAX_MTIME_PAD = bytes(BLOCK - 30)


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


def file_header(name: str, mode: int, size: int, mtime_ns: int) -> bytes:
    """tar_header(name, REGTYPE, mode, size, mtime_ns), the same bytes; quicker for what most
    files are (a short ASCII name, a 10-digit mtime): one header per file is the writer's
    main cost after reading."""
    sec, frac = divmod(mtime_ns, 1_000_000_000)
    if not name.isascii() or len(name) > 100 or size >= _MAX_OCTAL_12 or not 10 ** 9 <= sec < _MAX_OCTAL_12:
        return tar_header(name, REGTYPE, mode, size, mtime_ns)
    block = _ustar(name.encode("ascii"), REGTYPE, mode, size, sec, b"")
    if not frac:
        return block
    return b"".join((_PAX_MTIME, b"30 mtime=%d.%09d\n" % (sec, frac), _PAX_MTIME_PAD, block))
