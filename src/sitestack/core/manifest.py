"""sha256 manifest of a tree, and the list of files that embed a prefix.

Both come from one read of every byte: hashing already reads each file, so finding
the files that name the prefix costs nothing extra. Clones and stages use that list
and never scan the tree again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    mode: int  # permission bits as recorded at build time


@dataclass(frozen=True)
class PrefixHit:
    path: str
    kind: str  # "text" or "binary"


@dataclass
class Manifest:
    files: dict[str, FileEntry] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "version": 1,
            "algorithm": "sha256",
            "files": {p: [e.sha256, e.size, e.mode] for p, e in sorted(self.files.items())},
            "symlinks": dict(sorted(self.symlinks.items())),
            "dirs": sorted(self.dirs),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            files={p: FileEntry(str(v[0]), int(v[1]), int(v[2])) for p, v in data.get("files", {}).items()},
            symlinks=dict(data.get("symlinks", {})),
            dirs=list(data.get("dirs", [])),
        )

    def save(self, path: Path) -> None:
        from sitestack.core.fsutil import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a manifest; a truncated or corrupt one is a VerifyError (exit 6), not a crash."""
        from sitestack.errors import VerifyError

        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(json.load(f))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise VerifyError(f"{path} is corrupt or truncated ({type(e).__name__}: {e})",
                              hint="the records were changed: rebuild the stack, or restore "
                                   "the file from a backup") from None

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files.values())


def walk(root: Path, exclude: Iterable[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """Relative (files, symlinks, dirs) below root, skipping excluded top-level names."""
    skip = set(exclude)
    files: list[str] = []
    links: list[str] = []
    dirs: list[str] = []
    root_s = str(root)
    for dirpath, dirnames, filenames in os.walk(root_s):
        rel_dir = os.path.relpath(dirpath, root_s)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
            rel_dir = ""
        kept = []
        for d in dirnames:
            rel = os.path.join(rel_dir, d) if rel_dir else d
            if os.path.islink(os.path.join(dirpath, d)):
                links.append(rel)  # os.walk does not descend into links
            else:
                dirs.append(rel)
                kept.append(d)
        dirnames[:] = kept
        for f in filenames:
            rel = os.path.join(rel_dir, f) if rel_dir else f
            (links if os.path.islink(os.path.join(dirpath, f)) else files).append(rel)
    return files, links, dirs


def _scan_file(path: str, needles: tuple[bytes, ...]) -> tuple[str, int, int, str | None]:
    if path.endswith(".pyc"):
        # A .pyc names its source, but the import system corrects co_filename on load,
        # so bytecode never needs relocating.
        needles = ()
    h = hashlib.sha256()
    st = os.lstat(path)
    found = False
    binary = False
    tail = b""
    keep = max((len(n) for n in needles), default=1) - 1
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if needles:
                window = tail + chunk
                if not binary and b"\0" in chunk:
                    binary = True
                if not found and any(n in window for n in needles):
                    found = True
                tail = window[-keep:] if keep else b""
    hit = ("binary" if binary else "text") if found else None
    return h.hexdigest(), st.st_size, stat.S_IMODE(st.st_mode), hit


def scan(
    root: Path,
    prefixes: Iterable[str | bytes] = (),
    *,
    exclude: Iterable[str] = (".sitestack",),
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Manifest, list[PrefixHit]]:
    """Hash every file below root; also report files that contain any of `prefixes`.

    `progress` is called with each file's size once it is hashed."""
    root = Path(root)
    needles = tuple(p.encode() if isinstance(p, str) else p for p in prefixes)
    files, links, dirs = walk(root, exclude)
    manifest = Manifest(dirs=dirs)
    for rel in links:
        manifest.symlinks[rel] = os.readlink(root / rel)
    hits: list[PrefixHit] = []
    with ThreadPoolExecutor(max_workers=jobs or min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = pool.map(lambda rel: _scan_file(str(root / rel), needles), files)
        for rel, (digest, size, mode, hit) in zip(files, results, strict=True):
            manifest.files[rel] = FileEntry(digest, size, mode)
            if progress is not None:
                progress(size)
            if hit:
                hits.append(PrefixHit(rel, hit))
    return manifest, hits


def refresh(
    root: Path,
    manifest: Manifest,
    since_ns: int,
    prefixes: Iterable[str | bytes] = (),
    *,
    exclude: Iterable[str] = (".sitestack",),
    progress: Callable[[int], None] | None = None,
) -> list[PrefixHit]:
    """Bring `manifest` up to date after changes made since `since_ns`.

    Files that are new or whose mtime is not older than `since_ns` are hashed again; files
    that are gone are dropped. A metadata walk plus hashing only what changed costs far
    less than reading every byte twice. Returns prefix hits among the re-read files.
    """
    root = Path(root)
    needles = tuple(p.encode() if isinstance(p, str) else p for p in prefixes)
    files, links, dirs = walk(root, exclude)
    todo = [rel for rel in files
            if rel not in manifest.files or os.lstat(root / rel).st_mtime_ns >= since_ns]
    for gone in set(manifest.files) - set(files):
        del manifest.files[gone]
    manifest.symlinks = {rel: os.readlink(root / rel) for rel in links}
    manifest.dirs = dirs
    hits: list[PrefixHit] = []
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        for rel, (digest, size, mode, hit) in zip(
            todo, pool.map(lambda r: _scan_file(str(root / r), needles), todo), strict=True
        ):
            manifest.files[rel] = FileEntry(digest, size, mode)
            if progress is not None:
                progress(size)
            if hit:
                hits.append(PrefixHit(rel, hit))
    return hits


def save_prefix_files(path: Path, prefix: str, hits: list[PrefixHit]) -> None:
    from sitestack.core.fsutil import atomic_write_json

    atomic_write_json(
        path, {"prefix": prefix, "files": [{"path": h.path, "kind": h.kind} for h in hits]}
    )


def load_prefix_files(path: Path) -> tuple[str, list[PrefixHit]]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data["prefix"], [PrefixHit(e["path"], e["kind"]) for e in data["files"]]


@dataclass(frozen=True)
class Mismatch:
    path: str
    problem: str  # "missing", "changed", "extra", "link changed", "mode changed"


def verify(
    root: Path,
    manifest: Manifest,
    *,
    skip: Iterable[str] = (),
    check_extra: bool = True,
    check_mode: bool = False,
    exclude: Iterable[str] = (".sitestack",),
) -> list[Mismatch]:
    """Compare a tree with its manifest. `skip` names files allowed to differ (relocated)."""
    root = Path(root)
    skipped = set(skip)
    problems: list[Mismatch] = []
    files, links, dirs = walk(root, exclude)
    present = set(files)
    for p in manifest.files:
        if p not in present and p not in skipped:
            problems.append(Mismatch(p, "missing"))
    # lstat first, open only regular files: a FIFO put in a file's place would block the
    # open forever, a device could be read without end.
    todo = []
    for p in manifest.files:
        if p in skipped or p not in present:
            continue
        kind = _special(root / p)
        if kind:
            problems.append(Mismatch(p, f"changed (now a {kind})"))
        else:
            todo.append(p)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        for rel, (digest, size, mode, _hit) in zip(
            todo, pool.map(lambda r: _scan_file(str(root / r), ()), todo), strict=True
        ):
            entry = manifest.files[rel]
            if digest != entry.sha256 or size != entry.size:
                problems.append(Mismatch(rel, "changed"))
            elif check_mode and (mode & 0o111) != (entry.mode & 0o111):
                problems.append(Mismatch(rel, "mode changed"))
    link_set = set(links)
    for rel, target in manifest.symlinks.items():
        if rel not in link_set:
            problems.append(Mismatch(rel, "missing"))
        elif os.readlink(root / rel) != target and rel not in skipped:
            problems.append(Mismatch(rel, "link changed"))
    if check_extra:
        for rel in sorted((present - set(manifest.files)) | (link_set - set(manifest.symlinks))):
            problems.append(Mismatch(rel, _extra_kind(rel, manifest, root)))
        if manifest.dirs:  # manifests from before folders were recorded have none
            known = set(manifest.dirs)
            for rel in sorted(set(dirs) - known):
                # An added folder, even empty, is importable: a namespace package.
                if os.path.basename(rel) != "__pycache__":
                    problems.append(Mismatch(rel, "extra folder"))
    return problems


STRAY_BYTECODE = "stray bytecode"


def _extra_kind(rel: str, manifest: Manifest, root: Path) -> str:
    """"stray bytecode" for a .pyc in __pycache__ next to a source of the manifest: what root
    running the stack's python with -O (or a new optimization level) writes, since root
    ignores the read-only modes. Anything else is "extra" (or "extra special file")."""
    if _special(root / rel) not in ("", "symlink"):
        return f"extra special file ({_special(root / rel)})"
    d, name = os.path.split(rel)
    if os.path.basename(d) == "__pycache__" and name.endswith(".pyc"):
        src = os.path.join(os.path.dirname(d), name.split(".", 1)[0] + ".py")
        if src in manifest.files:
            return STRAY_BYTECODE
    return "extra"


def _special(path: Path) -> str:
    """'' for a regular file, else what it is (never opened)."""
    try:
        m = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISREG(m):
        return ""
    for test, kind in ((stat.S_ISFIFO, "fifo"), (stat.S_ISLNK, "symlink"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "folder")):
        if test(m):
            return kind
    return "special file"
