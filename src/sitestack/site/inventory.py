"""What a site holds, as frozen results: `list`, `show` and `diff` only render these."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.core.layout import SiteRoot
from sitestack.core.records import SPEC, STACK_JSON, StackRecord
from sitestack.site.registry import Site

# ---- list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionEntry:
    """One published version, with its disk use (hardlinks shared with earlier ones counted once)."""

    name: str
    version: str
    python: str
    kind: str
    packages: int
    files: int
    bytes: int
    disk_bytes: int
    new_disk_bytes: int
    default: bool
    hidden: bool
    deprecated: str | None
    prefix: Path

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def status(self) -> tuple[str, ...]:
        return tuple(s for s, on in (("default", self.default), ("hidden", self.hidden),
                                     ("deprecated", bool(self.deprecated))) if on)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "python": self.python, "kind": self.kind,
            "packages": self.packages, "files": self.files, "bytes": self.bytes,
            "disk_bytes": self.disk_bytes, "new_disk_bytes": self.new_disk_bytes,
            "default": self.default, "hidden": self.hidden, "deprecated": self.deprecated,
            "prefix": str(self.prefix), "status": "published", "retired": None, "message": None,
        }


@dataclass(frozen=True)
class RetiredEntry:
    """One retired version, from its kept records: the same fields as a published one (it
    uses no disk in stacks/, it is neither default nor hidden), plus its date and message."""

    name: str
    version: str
    python: str
    kind: str
    packages: int
    files: int
    bytes: int
    prefix: Path
    date: str
    message: str

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "python": self.python, "kind": self.kind,
            "packages": self.packages, "files": self.files, "bytes": self.bytes,
            "disk_bytes": 0, "new_disk_bytes": 0, "default": False, "hidden": False,
            "deprecated": None, "prefix": str(self.prefix), "status": "retired",
            "retired": self.date, "message": self.message,
        }


@dataclass(frozen=True)
class Listing:
    root: Path
    versions: tuple[VersionEntry, ...]
    retired: tuple[RetiredEntry, ...] = ()  # only with include_retired (`list --all`)

    @property
    def disk_bytes(self) -> int:
        """Blocks the listed versions use together, each shared file once."""
        return sum(v.new_disk_bytes for v in self.versions)

    def to_json(self) -> list[dict[str, Any]]:
        """One row per version, published then retired, every row with the same keys."""
        return [v.to_json() for v in self.versions] + [r.to_json() for r in self.retired]


def disk_use(prefix: Path, seen: set[tuple[int, int]]) -> tuple[int, int]:
    """(blocks used by this prefix, blocks not already counted in `seen`); adds to `seen`.

    An inode linked twice inside one prefix (the layers' copy of pip, lib/sitestack-pip, is
    hardlinked to the stack's own pip) uses its blocks once, as `du` counts it."""
    disk = new = 0
    mine: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(prefix):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            if key in mine:
                continue
            mine.add(key)
            disk += st.st_blocks * 512
            if key not in seen:
                seen.add(key)
                new += st.st_blocks * 512
    return disk, new


def list_versions(root: SiteRoot, name: str | None = None, *, include_retired: bool = False) -> Listing:
    """Every published version (of `name`, if given), oldest first within a name; with
    `include_retired`, the retired ones too (from their kept records)."""
    site = Site(root)
    state = site.state()
    seen: set[tuple[int, int]] = set()  # inodes already counted by an earlier version
    out = []
    for rec in site.versions(name):
        vs = site.version_state(rec, state)
        disk, new = disk_use(rec.prefix, seen)
        out.append(VersionEntry(
            name=rec.name, version=rec.version, python=rec.python, kind=rec.kind,
            packages=len(rec.packages), files=rec.files, bytes=rec.bytes, disk_bytes=disk,
            new_disk_bytes=new, default=site.default_version(rec.name) == rec.version,
            hidden=vs.hidden, deprecated=vs.deprecated, prefix=rec.prefix,
        ))
    return Listing(root.path, tuple(out), tuple(_retired(site, name)) if include_retired else ())


def _retired(site: Site, name: str | None) -> list[RetiredEntry]:
    out = []
    for r in site.retired(name):
        try:  # the kept stack.json; a version retired without one still gets its row
            data = json.loads((r.records / STACK_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        out.append(RetiredEntry(
            name=r.name, version=r.version, python=str(data.get("python", "")),
            kind=str(data.get("kind", "pypi")), packages=len(data.get("packages") or {}),
            files=int(data.get("files", 0) or 0), bytes=int(data.get("bytes", 0) or 0),
            prefix=r.prefix, date=r.date, message=r.message))
    return out


# ---- show ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackDetails:
    """One version as `show` tells it: its record, spec, modulefiles and state."""

    record: StackRecord
    spec: str
    lmod_file: Path
    tcl_file: Path
    lmod_dir: Path
    tcl_dir: Path
    default: bool
    hidden: bool
    deprecated: str | None

    @property
    def user_base(self) -> str:
        # Spelled with $HOME: it is each user's own folder, not the caller's.
        return str(self.record.user_base(home="$HOME"))

    def to_json(self) -> dict[str, Any]:
        rec = self.record
        return {
            "name": rec.name, "version": rec.version, "python": rec.python, "kind": rec.kind,
            "prefix": str(rec.prefix), "built": rec.built, "description": rec.description,
            "packages": rec.packages, "spec": self.spec,
            "modulefiles": {"lmod": str(self.lmod_file), "tcl": str(self.tcl_file)},
            "modulepath": {"lmod": str(self.lmod_dir), "tcl": str(self.tcl_dir)},
            "user_base": self.user_base, "default": self.default, "hidden": self.hidden,
            "deprecated": self.deprecated,
        }


def show(root: SiteRoot, ref: str) -> StackDetails:
    site = Site(root)
    rec = site.get(ref)
    vs = site.version_state(rec)
    return StackDetails(
        record=rec, spec=(rec.records / SPEC).read_text(encoding="utf-8"),
        lmod_file=root.lmod_dir / rec.name / f"{rec.version}.lua",
        tcl_file=root.tcl_dir / rec.name / rec.version,
        lmod_dir=root.lmod_dir, tcl_dir=root.tcl_dir,
        default=site.default_version(rec.name) == rec.version, hidden=vs.hidden,
        deprecated=vs.deprecated,
    )


# ---- diff ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: str | None  # None: not in the old version
    new: str | None  # None: not in the new version

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class StackDiff:
    old: str
    new: str
    old_python: str
    new_python: str
    changes: tuple[PackageChange, ...]

    @property
    def same(self) -> bool:
        return not self.changes and self.old_python == self.new_python

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "python": [self.old_python, self.new_python],
                "changes": [c.to_json() for c in self.changes]}


def diff(root: SiteRoot, old_ref: str, new_ref: str) -> StackDiff:
    """Packages added, removed and changed from `old_ref` to `new_ref`, by name."""
    site = Site(root)
    a, b = site.get(old_ref), site.get(new_ref)
    names = sorted(set(a.packages) | set(b.packages))
    changes = tuple(PackageChange(n, a.packages.get(n), b.packages.get(n))
                    for n in names if a.packages.get(n) != b.packages.get(n))
    return StackDiff(a.ref, b.ref, a.python, b.python, changes)
