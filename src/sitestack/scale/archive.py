"""`sitestack pack` as one library call: where the archive goes, in which format, and what it holds.

`pack.pack` writes an archive to a path it is given; this module decides the path (`-o`, or
the site's published ``ROOT/archives/NAME/VERSION.tar.zst`` for ``--publish``) and the format
(from the file name unless given), and returns what the command renders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.core.layout import SiteRoot
from sitestack.errors import UsageError
from sitestack.scale.pack import Header, pack


@dataclass(frozen=True)
class PackResult:
    header: Header
    output: str  # the archive path as given (or the published path): what the text names
    format: str  # "tar.zst" | "squashfs"
    size: int

    @property
    def archive(self) -> str:
        return os.path.abspath(self.output)

    def to_json(self) -> dict[str, Any]:
        return {**self.header.to_json(), "archive": self.archive, "format": self.format,
                "size": self.size, "id": self.header.dirname}


def format_for(output: str, fmt: str | None) -> str:
    """The format asked for, else squashfs for a .sqfs/.squashfs name, else tar.zst."""
    return fmt or ("squashfs" if output.endswith((".sqfs", ".squashfs")) else "tar.zst")


def pack_archive(target: str, root: SiteRoot, *, output: str | None = None, publish: bool = False,
                 fmt: str | None = None, layer: str | None = None, level: int = 3) -> PackResult:
    """Pack `target` into `output`, or with `publish` into the site's archive of that version."""
    if publish:
        from sitestack.site.registry import Site

        if layer or fmt == "squashfs":
            raise UsageError("--publish packs a stack alone, as tar.zst")
        rec = Site(root).get(target)
        output = str(root.archive(rec.name, rec.version))
    if output is None:
        raise UsageError("give -o FILE or --publish")
    fmt = format_for(output, fmt)
    header = pack(target, root, Path(output), fmt=fmt, layer=layer, level=level, make_parent=publish)
    return PackResult(header, output, fmt, os.path.getsize(output))
