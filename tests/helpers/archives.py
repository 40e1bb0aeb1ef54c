"""Crafted archives for tests: a tar.zst with a valid sitestack header, then any members.

Hostile archives (links out, `..`, devices) are built with these in pack, stage and
security tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import zstandard

from sitestack.core.manifest import Manifest
from sitestack.scale.pack import META, content_hash


def craft(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
          manifest: dict[str, object] | None = None, prefix: str = "/opt/orig/stack") -> Path:
    """A tar.zst with a valid sitestack header and manifest, then `members`."""
    man = manifest or {"files": {}, "symlinks": {}, "dirs": []}
    m = Manifest.from_json(man)  # a consistent header: each test breaks one thing only
    header = {"format": "sitestack-pack", "name": "evil", "version": "1", "kind": "stack",
              "python_xy": "3.11", "prefixes": {"stack": prefix},
              "content_hash": content_hash([("stack", prefix, json.dumps(man).encode())]),  # as written
              "files": len(m.files), "bytes": m.total_bytes}
    return write_archive(path, [(f"{META}/header.json", header), (f"{META}/stack/manifest.json", man),
                                (f"{META}/stack/prefix-files.json", {"prefix": prefix, "files": []})],
                         members)


def write_archive(path: Path, metas: list[tuple[str, object]],
                  members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A tar.zst of the JSON `metas` (name, object), then `members` as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, obj in metas:
            blob = json.dumps(obj).encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(blob)
            tf.addfile(ti, io.BytesIO(blob))
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    return ti, data


def manifest_entry(data: bytes) -> list[object]:
    return [hashlib.sha256(data).hexdigest(), len(data), 0o644]


def forge_image(tree: Path, out: Path, mount: str, name: str = "evil", pseudo: list[str] | None = None) -> Path:
    """A squashfs image of `tree` with a valid sitestack table for `mount` (which must end in
    /sitestack/<name>-1-<hash>), as anyone can make with mksquashfs: nothing in it is checked
    against a manifest, only its listing and its chunks."""
    import subprocess

    from sitestack.scale.image import append_table
    from sitestack.scale.pack import Header

    digest = mount.rsplit("-", 1)[1]
    header = Header.from_json({"format": "sitestack-pack", "name": name, "version": "1",
                               "kind": "stack", "python_xy": "3.11",
                               "prefixes": {"stack": "/opt/orig/stack"},
                               "content_hash": digest + "0" * (64 - len(digest)), "files": 0, "bytes": 0})
    subprocess.run(["mksquashfs", str(tree), str(out), "-noappend", "-quiet", "-no-progress",
                    "-no-xattrs", *(pseudo or [])], check=True, capture_output=True)
    append_table(out, header, mount)
    return out
