"""Hard-link members of an archive being unpacked (unpack.py): checked as they come, made once
every file is written.

tarwriter.py writes a file that is a hard link of one written earlier in the same part as a
tar hard-link member (no data; its linkname is the earlier member's name). One is accepted
only when its target is an earlier regular file of the same part (not a symlink, a folder, a
hard link, a later or unknown member, another part's file, itself), and its own manifest entry
(sha256, size, mode) is the target's: then the target's checked bytes are its checked bytes.
The links are made only after the writer threads are done (the target may still be queued).
"""

from __future__ import annotations

import os

from sitestack.core.manifest import FileEntry, Manifest
from sitestack.errors import VerifyError


class HardLinks:
    def __init__(self) -> None:
        self.files: dict[str, FileEntry] = {}  # regular file members so far: name -> entry
        self.todo: list[tuple[str, str]] = []  # (target, link) member names

    def check(self, name: str, target: str, manifest: Manifest) -> None:
        """Accept the hard-link member `name` -> `target` of `manifest`'s part, or raise."""
        role, _, rel = name.partition("/")
        entry = manifest.files.get(rel)
        if entry is None:
            raise VerifyError(f"archive hard link {name} is not in its manifest")
        if target.partition("/")[0] != role:
            raise VerifyError(f"unsafe archive: hard link {name} -> {target} leaves its part")
        first = self.files.get(target)
        if first is None:
            raise VerifyError(f"unsafe archive: hard link {name} -> {target} does not name an "
                              "earlier file of the archive")
        if first != entry:
            raise VerifyError(f"archive hard link {name} does not match its manifest "
                              f"(its entry is not that of {target})")
        self.todo.append((target, name))

    def make(self, dest: str) -> None:
        """Link every accepted member; the targets are written and were checked."""
        for target, name in self.todo:
            try:
                os.link(os.path.join(dest, target), os.path.join(dest, name), follow_symlinks=False)
            except (FileExistsError, NotADirectoryError, FileNotFoundError) as e:
                raise VerifyError(f"unsafe archive: hard link {name} cannot be made "
                                  f"({e.strerror})") from None
