"""sitestack retire NAME/VERSION: the stack's files go, its records stay, `module load` says why.

Steps, under the name's build lock (so no build or restore of NAME runs meanwhile):

1. copy PREFIX/.sitestack/ to ROOT/.sitestack/retired/NAME/.VERSION.tmp-HOST-PID-*, add
   retired.json (date, message), publish it as ROOT/.sitestack/retired/NAME/VERSION (core.publish);
2. rename PREFIX into ROOT/.sitestack/trash/ (same filesystem): the one step that retires it;
3. drop the version from the state (hidden, deprecated) and rewrite NAME's modulefiles: the
   version becomes a hidden stub whose load fails with "retired on DATE: MESSAGE";
4. remove the `pack --publish` archive (unless --keep-archive) and pack's note of checked files
   (ROOT/.sitestack/checked/NAME/VERSION), then delete the trash.

A version is retired when its records are kept *and* its prefix is gone (Site.retired), so a
kill -9 before step 2 leaves it published (its kept copy is ignored and replaced by the next
retire), and a kill after it leaves it retired. `finish_pending` (run by retire, restore and
gc under the same lock) completes steps 3-4 of a killed run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.core.fsutil import atomic_write_json, crash_point, file_lock, rmtree
from sitestack.core.layout import SiteRoot, records_dir
from sitestack.core.publish import make_temp, publish, temp_tree
from sitestack.core.records import RETIRED, STACK_JSON, RetiredRecord
from sitestack.errors import NotFoundError, UsageError, VerifyError
from sitestack.site.registry import Site, split_ref

DEFAULT_MESSAGE = "no longer maintained"


@dataclass(frozen=True)
class RetireResult:
    name: str
    version: str
    date: str
    message: str
    records: Path  # where the kept records are
    archive_removed: Path | None
    archive_kept: Path | None
    completed_earlier_run: bool  # a killed retire of this version was finished instead

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_json(self) -> dict[str, object]:
        return {"stack": self.ref, "retired": self.date, "message": self.message,
                "records": str(self.records),
                "archive_removed": str(self.archive_removed) if self.archive_removed else None,
                "archive_kept": str(self.archive_kept) if self.archive_kept else None,
                "completed_earlier_run": self.completed_earlier_run}


def exact_ref(ref: str) -> tuple[str, str]:
    """NAME/VERSION, both plain path components; UsageError (exit 2) otherwise."""
    name, version = split_ref(ref)
    if version is None:
        raise UsageError(f"{ref!r}: give NAME/VERSION")
    for part in (name, version):
        if part.startswith(".") or "\0" in part or part != part.strip():
            raise UsageError(f"{ref!r} is not NAME/VERSION")
    return name, version


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def trash_dir(root: SiteRoot, name: str) -> Path:
    """Where NAME's retired (or replaced) stacks wait to be deleted; only NAME's lock holder writes."""
    return root.trash / name


def remove_site_file(root: SiteRoot, path: Path) -> bool:
    """Unlink `path` (an archive, a note of checked files) when it is a file in a folder of
    the site reached without a link; True if it was removed."""
    folder = root.folder(path.parent)
    if folder is None or not (folder / path.name).is_file():
        return False
    (folder / path.name).unlink()
    return True


def _trash_entries(root: SiteRoot, name: str) -> list[tuple[Path, str]]:
    """(path, version or "") of NAME's stacks in the trash: left by a killed retire."""
    d = root.folder(trash_dir(root, name))
    if d is None:
        return []
    out = []
    for p in sorted(d.iterdir()):
        try:
            version = str(json.loads((p / TRASH_TAG).read_text(encoding="utf-8")).get("version", ""))
        except (OSError, ValueError, AttributeError):
            version = ""  # killed before the tag was written: nothing was moved in yet
        out.append((p, version))
    return out


# A small file beside the stack in its trash folder, saying which version it was.
TRASH_TAG = "trash.json"


def _modulefiles_stale(site: Site, name: str) -> bool:
    """A retired version without its stub, or a published one showing a stub."""
    for r in site.retired(name):
        lua = site.root.lmod_dir / name / f"{r.version}.lua"
        if not lua.is_file() or "LmodError" not in lua.read_text(errors="replace"):
            return True
    for rec in site.versions(name):
        lua = site.root.lmod_dir / name / f"{rec.version}.lua"
        if not lua.is_file() or "LmodError" in lua.read_text(errors="replace"):
            return True
    return False


def _drop_state(version: str) -> Callable[[dict[str, Any]], None]:
    def change(s: dict[str, Any]) -> None:
        s["hidden"] = [v for v in s["hidden"] if v != version]
        s["deprecated"].pop(version, None)
    return change


def finish_pending(site: Site, name: str) -> list[str]:
    """Complete what killed runs of retire/restore left for NAME. Call under NAME's lock.

    Returns the versions whose retirement was completed here.
    """
    root = site.root
    done: list[str] = []
    for path, version in _trash_entries(root, name):
        rmtree(path)  # we hold the lock: whoever moved it there is dead
        if version:
            done.append(version)
    base = root.folder(root.retired / name)
    if base is not None:
        for p in base.iterdir():
            if p.name.startswith("."):
                rmtree(p)  # a half-written copy of records
            elif root.prefix(name, p.name).exists() and (records_dir(root.prefix(name, p.name)) / STACK_JSON).is_file():
                rmtree(p)  # published again: a restore killed before it dropped the records
    for r in site.retired(name):
        if not r.keep_archive:
            remove_site_file(root, root.archive(name, r.version))
    if _modulefiles_stale(site, name):
        site.update_state(name, lambda s: None)
        done += [r.version for r in site.retired(name) if r.version not in done]
    return done


def retire(root: SiteRoot, ref: str, message: str | None = None, *, keep_archive: bool = False,
           lock_timeout: float = -1) -> RetireResult:
    name, version = exact_ref(ref)
    message = (message or "").strip() or DEFAULT_MESSAGE
    if "\n" in message:
        raise UsageError("--message must be one line: users see it when they load the module")
    site = Site(root)
    prefix = root.prefix(name, version)
    with file_lock(root.lock_for(name), timeout=lock_timeout, what=f"stack {name}"):
        completed = finish_pending(site, name)
        if not (records_dir(prefix) / STACK_JSON).is_file():
            gone = site.retired_record(name, version)
            if gone is None:
                site.get(f"{name}/{version}")  # NotFoundError naming the versions there are
                raise NotFoundError(f"no stack {name}/{version} in {root.path}")
            if version in completed:
                return _result(root, gone, completed_earlier_run=True)
            raise UsageError(f"{gone.ref} is already retired (on {gone.date}: {gone.message})",
                             hint=f"sitestack restore {gone.ref} brings it back")
        rec = site.get(f"{name}/{version}")
        if root.folder(prefix) is None:  # stacks/NAME as a link: its target is not the site's to delete
            raise VerifyError(f"{prefix} is not a folder of the site (reached through a link)")
        if site.default_version(name) == version:
            others = [r.version for r in site.versions(name) if r.version != version]
            if others:
                raise UsageError(f"{rec.ref} is the default of {name} (what `module load {name}` picks); "
                                 f"first run `sitestack default {name}/{others[-1]}`")
            raise UsageError(f"{rec.ref} is the only version of {name}; build another and make it the "
                             "default first")
        date = _dt.date.today().isoformat()
        kept = _keep_records(root, name, version, prefix, date, message, keep_archive)
        crash_point("retire:after-records")
        # Not core.publish.temp_tree: this temp outlives a kill on purpose (finish_pending reads
        # its tag and completes the retirement); only its name comes from the shared rule.
        trash = make_temp(root.make_folder(trash_dir(root, name)), f"{version}-", 0o700)
        atomic_write_json(trash / TRASH_TAG, {"name": name, "version": version})
        os.rename(prefix, trash / "stack")  # the one step: from here on it is retired
        _fsync_dir(prefix.parent)
        crash_point("retire:after-rename")
        site.update_state(name, _drop_state(version))
        crash_point("retire:after-modulefiles")
        archive = root.archive(name, version)
        removed = None
        if not keep_archive and remove_site_file(root, archive):
            removed = archive
        remove_site_file(root, root.checked(name, version))  # pack's note on files now gone
        crash_point("retire:before-delete")
        rmtree(trash)
    return RetireResult(name, version, date, message, kept, removed,
                        archive if keep_archive and archive.is_file() else None, False)


def _result(root: SiteRoot, r: RetiredRecord, *, completed_earlier_run: bool) -> RetireResult:
    archive = root.archive(r.name, r.version)
    return RetireResult(r.name, r.version, r.date, r.message, r.records, None,
                        archive if archive.is_file() else None, completed_earlier_run)


def _keep_records(root: SiteRoot, name: str, version: str, prefix: Path, date: str, message: str,
                  keep_archive: bool) -> Path:
    """Copy the stack's records to the site's state, with the date and message, atomically."""
    final = root.make_folder(root.retired_dir(name, version).parent) / version
    # Under NAME's lock: every `.V.tmp-` here is a killed run's (finish_pending clears them too).
    with temp_tree(final.parent, f".{version}.tmp-", locked=True) as tmp:
        src = records_dir(prefix)
        for f in sorted(src.iterdir()):
            if f.is_file():
                shutil.copyfile(f, tmp / f.name)  # content only: the kept copy stays writable by staff
        atomic_write_json(tmp / RETIRED, RetiredRecord(
            name=name, version=version, date=date, message=message, prefix=prefix, records=final,
            keep_archive=keep_archive).to_json())
        # Records of an earlier, undone retirement are swapped out and removed with the temp.
        publish(tmp, final, replace=True, durable=True)
    return final



def retired_of(ref: str | None, root: Path | None, home: Path | None) -> RetiredRecord | None:
    """The retirement of a layer's or clone's stack, from its NAME/VERSION and root, or from its
    interpreter's folder (`home`: ROOT/stacks/NAME/VERSION/bin); None where it is not retired."""
    if ref and root:
        name, _, version = ref.partition("/")
    elif home is not None and len(home.parents) >= 4:
        prefix = home.parent if home.name == "bin" else home
        name, version, root = prefix.parent.name, prefix.name, prefix.parents[2]
    else:
        return None
    return Site(SiteRoot(root)).retired_record(name, version) if name and version else None


def default_ref(name: str, root: Path) -> str | None:
    """NAME/VERSION of what `module load NAME` picks in `root`, or None."""
    v = Site(SiteRoot(root)).default_version(name)
    return f"{name}/{v}" if v else None
