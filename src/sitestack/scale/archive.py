"""`sitestack pack` as one library call: where the archive goes, in which format, and what it holds.

`pack.pack` writes a tar.zst and `image.make_image` a squashfs image to a path they are given;
this module decides the path (`-o`, or the site's published ``ROOT/archives/NAME/VERSION.tar.zst``
or ``VERSION.sqfs`` for ``--publish``) and the format (from the file name unless given), and
returns what the command renders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.core.layout import SiteRoot
from sitestack.errors import UsageError
from sitestack.scale.pack import Header, pack, stream_chunks, write_output


@dataclass(frozen=True)
class PackResult:
    header: Header
    output: str  # the archive path as given (or the published path): what the text names
    format: str  # "tar.zst" | "squashfs"
    size: int
    mount: str = ""  # an image's mount path: the staged copy `stage --mount --to DIR` makes

    @property
    def archive(self) -> str:
        return os.path.abspath(self.output)

    def to_json(self) -> dict[str, Any]:
        return {**self.header.to_json(), "archive": self.archive, "format": self.format,
                "size": self.size, "id": self.header.dirname, "mount": self.mount}


def format_for(output: str, fmt: str | None) -> str:
    """The format asked for, else squashfs for a .sqfs/.squashfs name, else tar.zst."""
    return fmt or ("squashfs" if output.endswith((".sqfs", ".squashfs")) else "tar.zst")


def pack_archive(target: str, root: SiteRoot, *, output: str | None = None, publish: bool = False,
                 fmt: str | None = None, layer: str | None = None, level: int = 3,
                 to: str | None = None) -> PackResult:
    """Pack `target` into `output`, or with `publish` into the site's archive of that version.
    A squashfs image is made for `stage --mount --to TO` (its files relocated for that path)."""
    if publish:
        from sitestack.site.registry import Site

        if layer:
            raise UsageError("--publish packs a stack alone")
        rec = Site(root).get(target)
        output = str(root.image(rec.name, rec.version) if fmt == "squashfs"
                     else root.archive(rec.name, rec.version))
    if output is None:
        raise UsageError("give -o FILE or --publish")
    fmt = format_for(output, fmt)
    if fmt != "squashfs":
        if to:
            raise UsageError("--to is for squashfs images (--format squashfs)")
        header = pack(target, root, Path(output), layer=layer, level=level, make_parent=publish)
        return PackResult(header, output, fmt, os.path.getsize(output))
    from sitestack.scale.image import mount_path
    from sitestack.scale.staged import check_to

    if not to:
        raise UsageError("a squashfs image is made for the folder that `stage --mount` mounts "
                         "it under: give --to DIR (the same as stage's --to)")
    check_to(to)
    if "{node}" in to:
        raise UsageError("--to: an image is mounted at one path on every node ({node} is for extraction)")
    header = write_output(Path(output), lambda tmp: _image(target, root, layer, level, to, tmp),
                          make_parent=publish)
    return PackResult(header, output, fmt, os.path.getsize(output), mount_path(to, header))


def _image(target: str, root: SiteRoot, layer: str | None, level: int, to: str, out: Path) -> Header:
    """The image of `target` for `stage --mount --to TO`; its tree is made in $TMPDIR."""
    import tempfile

    from sitestack.scale.image import make_image, mount_path

    header, chunks = stream_chunks(target, root, layer, 8 << 20)
    make_image(header, chunks, out, mount_path(to, header), level=level,
               work=Path(tempfile.gettempdir()))
    return header
