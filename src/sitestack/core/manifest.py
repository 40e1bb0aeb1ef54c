"""sha256 manifest of a tree, and the list of files that embed a prefix.

Both come from one read of every byte: hashing already reads each file, so finding
the files that name the prefix costs nothing extra. Clones and stages use that list
and never scan the tree again.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sitestack import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)  # slots: a stack's manifest makes 13,000-68,000 of them
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

    def canonical_json(self) -> bytes:
        """The one form a manifest is hashed in (a packed stack's content hash) and saved in:
        json.dumps(self.to_json(), sort_keys=True), byte for byte, written out here with
        json's own string encoder instead of a list per file first (70,000 files: 0.08 CPU-s
        instead of 0.20, on the path of every build)."""
        from json.encoder import encode_basestring_ascii as q  # what dumps uses (ensure_ascii)

        files = ", ".join([f"{q(p)}: [{q(e.sha256)}, {int(e.size)}, {int(e.mode)}]"
                           for p, e in sorted(self.files.items())])
        links = ", ".join([f"{q(p)}: {q(t)}" for p, t in sorted(self.symlinks.items())])
        dirs = ", ".join([q(d) for d in sorted(self.dirs)])
        return (f'{{"algorithm": "sha256", "dirs": [{dirs}], "files": {{{files}}}, '
                f'"symlinks": {{{links}}}, "version": 1}}').encode()

    def save(self, path: Path) -> None:
        from sitestack.core.fsutil import atomic_write_bytes

        # Canonical, not compact: pack then hashes and packs the file's bytes as they are.
        atomic_write_bytes(path, self.canonical_json() + b"\n")

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a manifest; a truncated or corrupt one is a VerifyError (exit 6), not a crash."""
        with open(path, "rb") as f:
            return cls.parse(f.read(), path)

    @classmethod
    def parse(cls, data: bytes, path: Path) -> Manifest:
        """The manifest in `data`, read from `path` (which a VerifyError names)."""
        from sitestack.errors import VerifyError

        try:
            return cls.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
            raise VerifyError(f"{path} is corrupt or truncated ({type(e).__name__}: {e})",
                              hint="the records were changed: rebuild the stack, or restore "
                                   "the file from a backup") from None

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files.values())


def walk(root: Path, exclude: Iterable[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """Relative (files, symlinks, dirs) below root, skipping excluded top-level names."""
    files, links, dirs, _mtimes = _walk(str(root), set(exclude), False)
    return files, links, dirs


def _walk(root: str, skip: set[str], want_mtime: bool,
          modes: dict[str, int] | None = None) -> tuple[list[str], list[str], list[str], list[int]]:
    """One scandir pass: the kind comes from the directory entry (no stat), and with
    `want_mtime` one lstat per file (what refresh compares); os.walk plus islink and a
    later lstat cost three system calls per file. `modes` receives the st_mode of every
    file (with `want_mtime`) and folder (one lstat each more)."""
    files: list[str] = []
    links: list[str] = []
    dirs: list[str] = []
    mtimes: list[int] = []
    todo = [(root, "")]
    while todo:
        path, rel_dir = todo.pop()
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            continue  # unreadable or removed meanwhile: skipped, as os.walk does
        for de in entries:
            if not rel_dir and de.name in skip:
                continue
            rel = f"{rel_dir}{de.name}"
            if de.is_symlink():
                links.append(rel)  # never followed, folders included
            elif de.is_dir(follow_symlinks=False):
                dirs.append(rel)
                todo.append((de.path, f"{rel}/"))
                if modes is not None:
                    modes[rel] = de.stat(follow_symlinks=False).st_mode
            else:
                files.append(rel)
                if want_mtime:
                    st = de.stat(follow_symlinks=False)
                    mtimes.append(st.st_mtime_ns)
                    if modes is not None:
                        modes[rel] = st.st_mode
    return files, links, dirs, mtimes


def _scan_file(path: str, needles: tuple[bytes, ...]) -> tuple[str, int, int, str | None]:
    if path.endswith(".pyc"):
        # A .pyc names its source, but the import system corrects co_filename on load,
        # so bytecode never needs relocating.
        needles = ()
    # os.open, fstat and os.read: half the CPU of lstat, open() and its BufferedReader for
    # the small files most trees are made of (0.25 vs 0.52 s for the 9,745 under 64 KiB of
    # the small numpy/scipy/pandas/matplotlib set), and under the GIL for less of it.
    # O_NOFOLLOW: a file swapped for a symlink is not followed; O_NONBLOCK: a FIFO in a
    # file's place opens at once, and fstat refuses it, where a plain open would hang.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        import hashlib  # here: clone imports this module and never hashes (5 ms of its start)

        h = hashlib.sha256()
        found = False
        tail = b""
        keep = max((len(n) for n in needles), default=1) - 1
        # Most files fit one read of their size; a short read is the end, which spares
        # the read that would just find it.
        want = CHUNK if st.st_size >= CHUNK else st.st_size + 1
        while chunk := os.read(fd, want):
            h.update(chunk)
            if needles and not found:
                window = tail + chunk if tail else chunk
                found = any(n in window for n in needles)
                tail = window[-keep:] if keep else b""
            if len(chunk) < want:
                break
    finally:
        os.close(fd)
    hit = None
    if found:
        # Whether it is a binary decides how it is relocated: read again, only for the few hits.
        with open(path, "rb") as f:
            binary = any(b"\0" in chunk for chunk in iter(lambda: f.read(CHUNK), b""))
        hit = "binary" if binary else "text"
    return h.hexdigest(), st.st_size, stat.S_IMODE(st.st_mode), hit


# A task per file costs more than hashing a small one (a future and two GIL hand-offs each,
# about 100 us of CPU on a busy 2-core machine: 1.3 s for 13,000 files); batches of files
# bring the pool's cost down to a few ms, and hundreds of batches still keep the threads even.
BATCH_FILES = 32


def _workers() -> int:
    return min(8, os.cpu_count() or 2)


def hash_files(
    root: Path,
    rels: list[str],
    needles: tuple[bytes, ...] = (),
    *,
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, tuple[str, int, int, str | None]]]:
    """(rel, (sha256, size, mode, prefix hit kind)) of each file, in the order given, read
    in batches by a thread pool (hashlib and reads release the GIL)."""
    top = str(root) + os.sep
    batches = [rels[i:i + BATCH_FILES] for i in range(0, len(rels), BATCH_FILES)]

    def one(batch: list[str]) -> list[tuple[str, int, int, str | None]]:
        return [_scan_file(top + r, needles) for r in batch]

    workers = min(jobs or _workers(), len(batches)) or 1
    if workers == 1:
        results: Iterable[list[tuple[str, int, int, str | None]]] = map(one, batches)
        for batch, res in zip(batches, results, strict=True):
            for rel, r in zip(batch, res, strict=True):
                if progress is not None:
                    progress(r[1])
                yield rel, r
        return
    # Here, not at import: pack and clone load manifests and hash none.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch, res in zip(batches, pool.map(one, batches), strict=True):
            for rel, r in zip(batch, res, strict=True):
                if progress is not None:
                    progress(r[1])
                yield rel, r


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
    for rel, (digest, size, mode, hit) in hash_files(root, files, needles, jobs=jobs, progress=progress):
        manifest.files[rel] = FileEntry(digest, size, mode)
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
    modes: dict[str, int] | None = None,
) -> list[PrefixHit]:
    """Bring `manifest` up to date after changes made since `since_ns`.

    Files that are new or whose mtime is not older than `since_ns` are hashed again; files
    that are gone are dropped. A metadata walk plus hashing only what changed costs far
    less than reading every byte twice. Returns prefix hits among the re-read files.
    `modes` receives the st_mode of every file and folder the walk saw (build locks the tree
    down from them: fsutil.make_readonly_from, without a walk of its own).
    """
    root = Path(root)
    needles = tuple(p.encode() if isinstance(p, str) else p for p in prefixes)
    files, links, dirs, mtimes = _walk(str(root), set(exclude), True, modes)
    known = manifest.files
    todo = [rel for rel, mt in zip(files, mtimes, strict=True) if mt >= since_ns or rel not in known]
    if len(known) > len(files) - sum(1 for rel in todo if rel not in known):  # some are gone
        present = set(files)
        for gone in [p for p in known if p not in present]:
            del known[gone]
    manifest.symlinks = {rel: os.readlink(root / rel) for rel in links}
    manifest.dirs = dirs
    hits: list[PrefixHit] = []
    for rel, (digest, size, mode, hit) in hash_files(root, todo, needles, progress=progress):
        known[rel] = FileEntry(digest, size, mode)
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
    for rel, (digest, size, mode, _hit) in hash_files(root, todo):
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
