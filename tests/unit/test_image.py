"""scale/image.py: an image's bytes checked chunk by chunk as they arrive in pieces of any size,
and its table read back from the end of the file, every field checked."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitestack.errors import VerifyError
from sitestack.scale.image import (
    FOOTER,
    MAGIC,
    Image,
    check_file,
    read_image,
    receive,
    table_digest,
)
from sitestack.scale.pack import Header

HEADER = Header.from_json({"format": "sitestack-pack", "name": "s", "version": "1", "kind": "stack",
                           "python_xy": "3.11", "prefixes": {"stack": "/opt/s/1"},
                           "content_hash": "ab" * 32, "files": 1, "bytes": 1})
MOUNT = f"/local/sitestack/{HEADER.dirname}"


def image_of(data: bytes, chunk: int = 4096) -> Image:
    chunks = [hashlib.sha256(data[i:i + chunk]).hexdigest() for i in range(0, len(data), chunk)]
    return Image(HEADER, MOUNT, len(data), chunk, tuple(chunks), table_digest(chunks))


def pieces(data: bytes, seed: int) -> Iterator[memoryview]:
    rnd, i = random.Random(seed), 0
    while i < len(data):
        n = rnd.choice([1, 7, 4095, 4096, 4097, 10_000, 30_000])
        yield memoryview(data[i:i + n])
        i += n


@pytest.mark.parametrize("seed", range(5))
def test_pieces_of_any_size_are_written_and_checked(tmp_path: Path, seed: int) -> None:
    data = os.urandom(100_000)  # not a multiple of the chunk: the last chunk is short
    img = image_of(data)
    out = tmp_path / "img"
    receive(pieces(data, seed), out, img)
    assert out.read_bytes() == data
    check_file(out, img)


@pytest.mark.parametrize("at", [0, 4095, 4096, 50_000, 99_999])
def test_one_flipped_byte_names_its_chunk(tmp_path: Path, at: int) -> None:
    data = os.urandom(100_000)
    img = image_of(data)
    bad = bytearray(data)
    bad[at] ^= 1
    with pytest.raises(VerifyError, match=f"image chunk {at // 4096 + 1} of 25 .* does not match its sha256"):
        receive(pieces(bytes(bad), at), tmp_path / "img", img)
    (tmp_path / "good").write_bytes(bytes(bad))  # and the same, read back from disk
    with pytest.raises(VerifyError, match=f"image chunk {at // 4096 + 1} of 25"):
        check_file(tmp_path / "good", img)


def test_a_short_or_long_stream_is_refused(tmp_path: Path) -> None:
    data = os.urandom(20_000)
    img = image_of(data)
    with pytest.raises(VerifyError, match="truncated"):
        receive(iter([memoryview(data[:16_384])]), tmp_path / "a", img)
    with pytest.raises(VerifyError, match="longer than its table says"):
        receive(iter([memoryview(data + b"x")]), tmp_path / "b", img)


def _file(tmp_path: Path, table: dict[str, object], body: bytes = b"hsqs" + b"\0" * 4092) -> Path:
    raw = json.dumps(table).encode()
    p = tmp_path / "x.sqfs"
    p.write_bytes(body + raw + FOOTER.pack(MAGIC, len(raw)))
    return p


def test_the_table_is_read_from_the_end_and_checked(tmp_path: Path) -> None:
    body = b"hsqs" + os.urandom(5000)
    good = image_of(body).to_json()
    assert read_image(_file(tmp_path, good, body)).to_json() == good
    bad_cases = {
        "bad mount path": {**good, "mount": "/local/sitestack/other-1-abababababab"},
        "bad mount path ": {**good, "mount": f"/local/../x/sitestack/{HEADER.dirname}"},
        "bad list of chunk sha256s": {**good, "chunks": good["chunks"][:1]},  # type: ignore[index]
        "not that of its chunks": {**good, "sha256": "0" * 64},
        "bad size": {**good, "size": -1},
        "version": {**good, "format_version": 2},
        "says": {**good, "size": len(body) - 1,
                 "chunks": [hashlib.sha256(body[:4096]).hexdigest(), hashlib.sha256(body[4096:-1]).hexdigest()],
                 "sha256": table_digest([hashlib.sha256(body[:4096]).hexdigest(),
                                         hashlib.sha256(body[4096:-1]).hexdigest()])},
    }
    for what, table in bad_cases.items():
        with pytest.raises(VerifyError, match=what.strip()):
            read_image(_file(tmp_path, table, body))
    p = _file(tmp_path, good, body)
    p.write_bytes(p.read_bytes()[:-16] + FOOTER.pack(MAGIC, 1 << 40))  # a length past the file
    with pytest.raises(VerifyError, match="length is corrupt"):
        read_image(p)
    p.write_bytes(body)  # a squashfs image with no table at all
    with pytest.raises(VerifyError, match="without a sitestack table"):
        read_image(p)
