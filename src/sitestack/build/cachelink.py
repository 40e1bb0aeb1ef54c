"""Site-cache entries hardlinked into a stack (build/pkgcache.py chooses them).

The link of an 8 GiB stack is 67,000 link(2) and 8,400 mkdir(2) calls, the kernel's work,
which runs on every core: the entries are walked (one scandir per folder, no stat) and their
records read by a thread each, a file two distributions ship is planned once, from the later
one (as pip leaves it), and then this thread makes the folders in order while the other
threads link the files of the folders made so far (core/copytree.clone_tree's plan).

A warm build knows its entries only once the resolve is back, a second or two of waiting on
the index. `prepare` walks and plans a guess at them meanwhile (the entries of the newest
published version of the same spec) and makes its folders, mkdir being the slow call; `link`
then links only the files when the guess was right, and otherwise plans again (reusing the
walks of the entries the guess had right), makes what folders are missing and removes the
guess's own folders that nothing needs: folders are all it made, and they are empty.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.pool import Pool, usable_cpus

if TYPE_CHECKING:
    from sitestack.build.cacheentry import Entry
    from sitestack.core.manifest import FileEntry

LINK_BATCH = 64  # files per thread task: enough to amortise the pool's own overhead

# (files as (rel, source), symlinks as (rel, source), folders, recorded hashes) of one entry
Walk = tuple[list[tuple[str, str]], list[tuple[str, str]], list[str], "Mapping[str, FileEntry]"]


@dataclass(frozen=True)
class LinkResult:
    linked: int
    copied: int
    known: dict[str, FileEntry] = field(default_factory=dict)  # linked files, hashes from the entry
    rewritten_py: bool = False  # a copied-and-rewritten .py: its cached .pyc no longer matches
    copies: tuple[str, ...] = ()  # the files copied (rewritten, or not linkable): no hash known


@dataclass
class LinkPlan:
    """What linking `entries` puts where: every file from the last entry that ships it."""

    entries: tuple[Path, ...]
    files: dict[str, tuple[int, str]]  # rel -> (entry index, source)
    links: dict[str, str]  # rel -> source symlink
    rewrite: dict[str, int]  # rel -> entry index: copied and rewritten for the prefix
    dirs: list[str]  # sorted: parents before children
    walks: dict[Path, Walk]
    made: list[str] = field(default_factory=list)  # folders prepare() made


def plan(entries: Sequence[Entry], pool: Pool, walks: Mapping[Path, Walk] | None = None) -> LinkPlan:
    """Walk the entries (on `pool`; those in `walks` already are) and plan the link."""
    walks = dict(walks or {})
    todo = {e.path: pool.submit(_walk_entry, e) for e in entries if e.path not in walks}
    files: dict[str, tuple[int, str]] = {}
    links: dict[str, str] = {}
    rewrite: dict[str, int] = {}
    dirs: set[str] = set()
    for i, e in enumerate(entries):
        if e.path in todo:
            walks[e.path] = todo[e.path].result()
        e_files, e_links, e_dirs, _records = walks[e.path]
        dirs.update(e_dirs)
        again = set(e.rewrite)
        for rel, src in e_files:
            links.pop(rel, None)
            if rel in again:
                files.pop(rel, None)
                rewrite[rel] = i
            else:
                rewrite.pop(rel, None)
                files[rel] = (i, src)
        for rel, src in e_links:
            files.pop(rel, None)
            rewrite.pop(rel, None)
            links[rel] = src
    return LinkPlan(tuple(e.path for e in entries), files, links, rewrite, sorted(dirs), walks)


def prepare(entries: Sequence[Entry], prefix: Path, ready: Callable[[], object], jobs: int = 0) -> LinkPlan:
    """Plan a guess at the entries and make its folders in `prefix` once `ready()` returns
    (the interpreter's copy is complete); `link` uses or undoes it. A folder that cannot be
    made is left to `link`, which makes or refuses it as it would have."""
    with Pool(jobs or usable_cpus()) as pool:
        p = plan(entries, pool)
    ready()
    dest = str(prefix)
    for d in p.dirs:
        try:
            os.mkdir(f"{dest}/{d}")
            p.made.append(d)
        except FileExistsError:
            continue
        except OSError:
            break
    return p


def link(entries: Sequence[Entry], prefix: Path, jobs: int = 0, ready: LinkPlan | None = None) -> LinkResult:
    """Hardlink every entry's files into `prefix`; copy and rewrite the prefix-naming ones.

    Returns the linked files' recorded hashes, so the build need not read them again.
    `ready`: what `prepare` planned and made for a guess at `entries`."""
    dest = str(prefix)
    premade = set(ready.made) if ready is not None else set()
    with Pool(jobs or usable_cpus()) as pool:
        try:
            if ready is not None and ready.entries == tuple(e.path for e in entries):
                p = ready
            else:
                p = plan(entries, pool, ready.walks if ready is not None else None)
            by_dir: dict[str, list[tuple[str, str]]] = {}
            known: dict[str, FileEntry] = {}
            for rel, (i, src) in p.files.items():
                by_dir.setdefault(rel.rpartition("/")[0], []).append((src, rel))
                if (entry := p.walks[entries[i].path][3].get(rel)) is not None:
                    known[rel] = entry
            tasks = []
            batch: list[tuple[str, str]] = list(by_dir.pop("", ()))
            for d in p.dirs:  # parents before children
                if d not in premade:
                    with contextlib.suppress(FileExistsError):  # the interpreter's, or a shared one
                        os.mkdir(f"{dest}/{d}")
                batch += by_dir.pop(d, ())
                if len(batch) >= LINK_BATCH:
                    tasks.append(pool.submit(_link_files, batch, dest))
                    batch = []
            if batch:
                tasks.append(pool.submit(_link_files, batch, dest))
            for rel, src in p.links.items():
                _replace_link(src, Path(dest, rel))
            new = dest.encode()
            for rel, i in p.rewrite.items():
                e, src = entries[i], f"{entries[i].tree}/{rel}"
                data = Path(src).read_bytes()
                for o in e.old:
                    data = data.replace(o.encode(), new)
                _unlink_any(f"{dest}/{rel}")
                Path(dest, rel).write_bytes(data)
                os.chmod(f"{dest}/{rel}", os.lstat(src).st_mode & 0o777 | 0o200)
            copied = [rel for t in tasks for rel in t.result()]
        except BaseException:
            pool.shutdown(wait=True, cancel=True)
            raise
    if ready is not None and p is not ready:  # the guess's own folders that nothing needs
        needed = set(p.dirs)
        for d in sorted(premade - needed, reverse=True):  # children before parents
            with contextlib.suppress(OSError):  # not empty: then the walk after the tests records it
                os.rmdir(f"{dest}/{d}")
    for rel in copied:
        known.pop(rel, None)  # copied, not linked: hashed by the build
    return LinkResult(len(p.files) - len(copied), len(copied) + len(p.rewrite), known,
                      any(rel.endswith(".py") for rel in p.rewrite), (*p.rewrite, *copied))


def _walk_entry(e: Entry) -> Walk:
    """An entry's files and symlinks as (rel, source), its folders, and its recorded hashes."""
    files: list[tuple[str, str]] = []
    links: list[tuple[str, str]] = []
    dirs: list[str] = []
    todo = [(str(e.tree), "")]
    while todo:
        src_dir, rel_dir = todo.pop()
        with os.scandir(src_dir) as it:
            for de in it:
                rel = f"{rel_dir}{de.name}"
                if de.is_symlink():
                    links.append((rel, de.path))
                elif de.is_dir(follow_symlinks=False):
                    dirs.append(rel)
                    todo.append((de.path, f"{rel}/"))
                else:
                    files.append((rel, de.path))
    m = e.files()
    return files, links, dirs, m.files if m is not None else {}


def _link_files(batch: list[tuple[str, str]], dest: str) -> list[str]:
    """Hardlink each (source, rel) under `dest`; returns the rels that had to be copied."""
    copied = []
    for src, rel in batch:
        out = f"{dest}/{rel}"
        try:
            try:
                os.link(src, out)
            except FileExistsError:  # a file of the interpreter's copy: the entry's wins
                os.unlink(out)
                os.link(src, out)
        except OSError:
            _unlink_any(out)
            shutil.copy2(src, out)  # another filesystem, or not allowed
            copied.append(rel)
    return copied


def _unlink_any(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _replace_link(src: str, dest: Path) -> None:
    if os.path.lexists(dest):
        os.unlink(dest)
    os.symlink(os.readlink(src), dest)
