"""`sitestack restore`: build/restore.py does the work; this gives it the archive reader.

Restoring from a kept `pack --publish` archive needs scale/unpack.py, which sits above build,
so the command calls this function and build never imports scale.
"""

from __future__ import annotations

from pathlib import Path

from sitestack import TYPE_CHECKING

if TYPE_CHECKING:
    from sitestack.build.restore import RestoreResult
    from sitestack.core.layout import SiteRoot
    from sitestack.core.log import BuildLog
    from sitestack.core.manifest import Manifest


class _Reader:
    def header(self, archive: Path) -> tuple[str, str, str]:
        from sitestack.scale.image import read_header

        fmt, h = read_header(archive)
        return fmt, h.kind, h.prefixes.get("stack", "")

    def unpack(self, archive: Path, dest: Path) -> Manifest:
        from sitestack.errors import VerifyError
        from sitestack.scale.unpack import unpack_tar

        with open(archive, "rb") as f:
            u = unpack_tar(f, dest)
        if "stack" not in u.manifests:
            raise VerifyError(f"{archive} holds no stack")
        return u.manifests["stack"]


def restore(root: SiteRoot, ref: str, *, from_archive: bool = False, log: BuildLog | None = None) -> RestoreResult:
    from sitestack.build import restore as build_restore

    return build_restore.restore(root, ref, from_archive=from_archive, log=log,
                                 reader=_Reader() if from_archive else None)
