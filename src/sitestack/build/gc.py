"""sitestack gc: free what no published stack uses.

What goes:
- package-cache entries (build/pkgcache.py) no published stack uses. The rule is by inode:
  an entry is used when any of its files is the same inode (st_dev, st_ino) as a file of a
  published stack, or of a build in progress. Stacks hardlink entries' files, so this asks
  the filesystem itself instead of a list that a killed build or a hand-deleted stack could
  leave wrong; a file a stack copied instead of linking never pins an entry, as it should not.
- temp folders of killed builds, restores and cache fills (ROOT/.sitestack/tmp, pypi/.tmp-*),
  half-removed cache entries (pypi/.gc-*) and stacks left in the trash by a killed retire;
- temps of killed `pack` runs (`.V.tar.zst.tmp-HOST-PID-*`, as large as the archive) and
  killed clones (`.NAME.clone-HOST-PID-*`) in the site's own folders (archives/, and any
  folder up to three levels below ROOT outside stacks/, .sitestack/ and the modulefiles),
  by core.publish.clear_stale's rule: only those of this host whose process is gone;
- `pack --publish` archives and images of versions that are not published, unless their retirement
  asked to keep the archive (`retire --keep-archive`).
- the site's uv caches (ROOT/.sitestack/uv/UID, the ones this user may remove): they hardlink
  the wheels the entries came from, so without this a removed entry would free nothing.

Locks: gc holds the cache's use-lock exclusively (builds hold it shared from resolving their
pins to linking them, so no build loses an entry it chose), and a temp folder or trash entry
is removed only while gc holds the lock of its stack name (which a running build, retire or
restore of that name holds). Every removal first renames the entry to a `.gc-` name, so a
kill -9 leaves nothing a build would trust, and the next gc finishes it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sitestack.build import pkgcache
from sitestack.core.fsutil import crash_point, file_lock, rmtree, shared_lock
from sitestack.core.layout import SiteRoot
from sitestack.core.publish import HOST, owner, pid_alive
from sitestack.errors import ConflictError
from sitestack.site.registry import Site
from sitestack.site.retire import finish_pending, trash_dir


@dataclass(frozen=True)
class Removed:
    kind: str  # "cache-entry" | "uv-cache" | "temp" | "trash" | "archive"
    path: Path
    bytes: int  # disk blocks freed (files linked elsewhere too free nothing)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "path": str(self.path), "bytes": self.bytes}


@dataclass(frozen=True)
class GcResult:
    removed: tuple[Removed, ...]
    kept_entries: int
    dry_run: bool

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes for r in self.removed)

    def to_json(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "bytes_freed": self.bytes_freed, "kept_cache_entries": self.kept_entries,
                "removed": [r.to_json() for r in self.removed]}


def _freeable(*paths: Path) -> int:
    """Disk blocks that deleting all of `paths` gives back: an inode counts when all its links
    are inside them."""
    total = 0
    inodes: dict[tuple[int, int], list[int]] = {}  # -> [links seen here, st_nlink, bytes]

    def count(p: str) -> None:
        try:
            st = os.lstat(p)
        except OSError:
            return
        seen = inodes.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, st.st_blocks * 512])
        seen[0] += 1

    for path in paths:
        if path.is_symlink() or not path.is_dir():
            count(str(path))
            continue
        for dirpath, dirs, files in os.walk(path):
            total += os.lstat(dirpath).st_blocks * 512
            for n in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
                count(os.path.join(dirpath, n))
    return total + sum(b for here, nlink, b in inodes.values() if here >= nlink)


def _inodes(trees: list[Path]) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for t in trees:
        for dirpath, _dirs, files in os.walk(t):
            for f in files:
                try:
                    st = os.lstat(os.path.join(dirpath, f))
                except OSError:
                    continue
                out.add((st.st_dev, st.st_ino))
    return out


def _lock_names(root: SiteRoot) -> list[str]:
    """Stack names that have a build lock (every build, retire, restore of NAME makes one)."""
    skip = {root.state_lock.name, "pypi-cache.lock", pkgcache.use_lock(root).name}
    if not root.locks.is_dir():
        return []
    return sorted(p.name[: -len(".lock")] for p in root.locks.glob("*.lock") if p.name not in skip)


def _owner(entry: str, names: list[str]) -> str | None:
    """The stack name of a temp folder NAME-VERSION-XXXX (the longest name that fits)."""
    fits = [n for n in names if entry.startswith(f"{n}-")]
    return max(fits, key=len) if fits else None


def gc(root: SiteRoot, *, dry_run: bool = False) -> GcResult:
    site = Site(root)
    removed: list[Removed] = []

    def remove(kind: str, path: Path, *, rename: bool = True) -> None:
        size = _freeable(path)
        removed.append(Removed(kind, path, size))
        if dry_run:
            return
        target = path
        if rename:
            target = path.with_name(f"{pkgcache.GC_PREFIX}{path.name}-{os.getpid()}")
            os.rename(path, target)
            crash_point("gc:after-rename")
        rmtree(target)

    with shared_lock(pkgcache.use_lock(root), exclusive=True, what="the site's package cache"):
        names = sorted(set(_lock_names(root)) | set(site.names()))
        live: list[Path] = []  # temp folders of builds running now: their links count as used
        # Every folder gc deletes in is reached from the root without a link (SiteRoot.folder): a
        # link planted at .sitestack/trash/NAME is reported and left alone, never emptied.
        tmp_dir = root.folder(root.tmp)
        for name in names:
            temps = [p for p in (sorted(tmp_dir.iterdir()) if tmp_dir else []) if _owner(p.name, names) == name]
            trash_d = root.folder(trash_dir(root, name))
            trash = sorted(trash_d.iterdir()) if trash_d else []
            try:
                with file_lock(root.lock_for(name), timeout=0, what=f"stack {name}"):
                    for p in temps:
                        remove("temp", p, rename=not p.name.startswith(pkgcache.GC_PREFIX))
                    for p in trash:
                        remove("trash", p, rename=False)  # already out of stacks/; under the lock
                    if not dry_run:
                        finish_pending(site, name)
            except ConflictError:
                live += temps  # a build, retire or restore of NAME is running
        if tmp_dir:  # a killed gc's own half-removed temps
            removed_tmp = [p for p in tmp_dir.iterdir() if p.name.startswith(pkgcache.GC_PREFIX)]
            for p in removed_tmp:
                remove("temp", p, rename=False)
        # Temp folders first, then stacks: a build renaming tmp -> stacks meanwhile is seen once.
        used = _inodes(live)
        used |= _inodes([rec.prefix for rec in site.versions()])
        kept = 0
        cache = root.folder(pkgcache.cache_root(root))
        for entry in pkgcache.entries(root) if cache else []:
            if any((st.st_dev, st.st_ino) in used for st in map(os.lstat, pkgcache.entry_files(entry))):
                kept += 1
                continue
            size = _freeable(entry)
            removed.append(Removed("cache-entry", entry, size))
            if not dry_run:
                gone = pkgcache.discard(entry)
                crash_point("gc:after-rename")
                rmtree(gone)
        for p in pkgcache.leftovers(root) if cache else []:
            remove("cache-entry", p, rename=False)
        _empty_uv_caches(root, removed, dry_run)
        removed += _archives(site, dry_run)
        for p in _dead_temps(root):
            remove("temp", p, rename=False)  # its owner is dead: nobody else uses that name
    return GcResult(tuple(removed), kept, dry_run)


def _empty_uv_caches(root: SiteRoot, removed: list[Removed], dry_run: bool) -> None:
    """Empty the site's uv caches (ROOT/.sitestack/uv/UID), held like the package cache.

    uv hardlinks wheels from them into new cache entries, so a removed entry's files would
    stay on disk through the uv cache; and the uv cache only speeds the first install of a
    distribution, which the site cache then keeps. Another user's cache is left to them (its
    files are theirs to remove). Its bytes are what removing it adds to the entries removed
    with it, so the total is the real total.
    """
    entries = [r.path for r in removed if r.kind == "cache-entry"]
    for cache in pkgcache.uv_caches(root):
        if root.folder(cache) is None:
            continue  # reached through a link: not the site's to empty
        if os.lstat(cache).st_uid != os.getuid() and os.getuid() != 0:
            continue
        size = _freeable(*entries, cache) - _freeable(*entries) if dry_run else _freeable(cache)
        removed.append(Removed("uv-cache", cache, size))
        entries.append(cache)
        if not dry_run:
            target = cache.with_name(f"{pkgcache.GC_PREFIX}{cache.name}-{os.getpid()}")
            os.rename(cache, target)
            crash_point("gc:after-rename")
            rmtree(target)


# `.OUT.tmp-HOST-PID-RAND` (pack, core.publish.temp_name), `.DEST.clone-HOST-PID-RAND` (clone),
# and `.OUT.tmp-PID` of packs from before temps carried their host.
# (fullmatch only: `$` would also match before a final newline)
_TEMP = re.compile(r"\.(?P<base>.+)\.(?P<kind>tmp|clone)-(?P<rest>[^-]+-\d+-[0-9a-f]+)")
_OLD_PACK_TEMP = re.compile(r"\..+\.tmp-(?P<pid>\d+)")
_TEMP_DEPTH = 3  # ROOT/archives/NAME/.V.tar.zst.tmp-*, or a staff clone such as ROOT/clones/x


def _is_dead_temp(name: str) -> bool:
    """clear_stale's rule: a temp of this host whose process is gone (never another host's)."""
    m = _TEMP.fullmatch(name)
    if m:
        who = owner(name, f".{m['base']}.{m['kind']}-")
        return who is not None and who[0] == HOST and not pid_alive(who[1])
    old = _OLD_PACK_TEMP.fullmatch(name)
    return old is not None and not pid_alive(int(old["pid"]))


def _dead_temps(root: SiteRoot) -> list[Path]:
    """Temps of killed packs and clones in the site's own folders (see the module docstring).

    A temp sits beside its destination, so only folder entries are looked at: gc never
    descends into a temp, a stack, a layer or a clone (a folder with pyvenv.cfg or records)."""
    skip = {root.stacks, root.meta, root.lmod_dir, root.tcl_dir}
    out: list[Path] = []

    def scan(folder: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith("."):
                if _is_dead_temp(e.name):
                    out.append(Path(e.path))
                continue
            p = Path(e.path)
            if depth < _TEMP_DEPTH and e.is_dir(follow_symlinks=False) and p not in skip \
                    and not (p / "pyvenv.cfg").exists() and not (p / ".sitestack").exists():
                scan(p, depth + 1)

    scan(root.path, 1)
    return out


def _archives(site: Site, dry_run: bool) -> list[Removed]:
    base = site.root.folder(site.root.path / "archives")
    if base is None:
        return []
    published = {(r.name, r.version) for r in site.versions()}
    # A retired version's archive goes only where its readable record says so: one whose
    # retired.json cannot be read (reported by Site.retired) keeps its archive.
    records = {(r.name, r.version): r.keep_archive for r in site.retired()}
    out = []
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()):
        for f in sorted([*d.glob("*.tar.zst"), *d.glob("*.sqfs")]):  # pack --publish [--format squashfs]
            key = (d.name, f.name.removesuffix(".tar.zst").removesuffix(".sqfs"))
            kept = records.get(key, os.path.lexists(site.root.retired_dir(*key)))
            if f.name.startswith(".") or key in published or kept:
                continue
            out.append(Removed("archive", f, _freeable(f)))
            if not dry_run:
                f.unlink()
    return out
