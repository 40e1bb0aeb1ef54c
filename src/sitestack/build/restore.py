"""sitestack restore NAME/VERSION: a retired version back at its original path, same lock.

From the lock (default): a build of the kept spec with `--from-lock` of the kept lock, published
like any build (smoke-tested, read-only, one rename), and refused before that rename unless it
installed exactly the kept lock. From the archive (`--from-archive`): the kept
`pack --publish` archive is unpacked into a temp folder, every file's sha256 checked as it is
written against the archive's manifest, which must equal the kept manifest; the kept records
go back, the imports are smoke-tested, and it is published by one rename.

Either way the kept records are dropped only after the stack is published: a kill -9 before
the rename leaves the version retired (its temp folder is removed by the next build, restore
or gc), a kill after it leaves it published (the stale records are dropped by the next
retire, restore or gc of the name, and are ignored meanwhile).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sitestack.build.smoke import run_smoke_tests
from sitestack.core.fsutil import crash_point, file_lock, make_readonly
from sitestack.core.layout import SiteRoot, records_dir
from sitestack.core.log import BuildLog
from sitestack.core.manifest import Manifest
from sitestack.core.publish import publish, temp_tree
from sitestack.core.records import (
    LOCK,
    MANIFEST,
    RETIRED,
    SPEC,
    STACK_JSON,
    RetiredRecord,
    StackRecord,
    read_lock,
)
from sitestack.errors import ConflictError, NotFoundError, UsageError, VerifyError
from sitestack.site.registry import Site
from sitestack.site.retire import exact_ref, finish_pending
from sitestack.site.spec import StackSpec, parse_spec


@dataclass(frozen=True)
class RestoreResult:
    name: str
    version: str
    prefix: Path
    source: str  # "lock" | "archive"
    packages: dict[str, str]
    same_lock: bool
    files: int
    seconds: float

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_json(self) -> dict[str, object]:
        return {"stack": self.ref, "prefix": str(self.prefix), "from": self.source,
                "packages": self.packages, "same_lock": self.same_lock, "files": self.files,
                "seconds": round(self.seconds, 3)}


def _retired(site: Site, name: str, version: str) -> RetiredRecord:
    prefix = site.root.prefix(name, version)
    if (records_dir(prefix) / STACK_JSON).is_file() or prefix.exists():
        raise UsageError(f"{name}/{version} is published at {prefix}; only a retired version can be restored")
    r = site.retired_record(name, version)
    if r is None:
        have = ", ".join(x.ref for x in site.retired(name)) or "none"
        raise NotFoundError(f"{name}/{version} was never retired in {site.root.path} "
                            f"(retired versions of {name}: {have})")
    return r


class ArchiveReader(Protocol):
    """Reads `pack --publish` archives (scale/restore.py gives one: scale sits above build)."""

    def header(self, archive: Path) -> tuple[str, str, str]:
        """(format, kind, the stack's original prefix) from the archive's header."""
        ...

    def unpack(self, archive: Path, dest: Path) -> Manifest:
        """Extract into dest (dest/stack/...), every file checked; the archive's stack manifest."""
        ...


def restore(root: SiteRoot, ref: str, *, from_archive: bool = False, log: BuildLog | None = None,
            reader: ArchiveReader | None = None) -> RestoreResult:
    t0 = time.monotonic()
    if from_archive and reader is None:
        raise UsageError("restoring from an archive needs an archive reader (sitestack.scale.restore)")
    name, version = exact_ref(ref)
    site = Site(root)
    log = log or BuildLog()
    with file_lock(root.lock_for(name), what=f"stack {name}"):
        finish_pending(site, name)
        r = _retired(site, name, version)
    if str(r.prefix) != str(root.prefix(name, version)):
        raise UsageError(f"{r.ref} was published at {r.prefix}, not in this root ({root.path})")
    kept = read_kept(r, manifest=from_archive)  # all of them, before anything is made
    rec = _from_archive(site, r, log, reader, kept) if reader is not None and from_archive \
        else _from_lock(site, r, kept, log)
    crash_point("restore:after-publish")
    with file_lock(root.lock_for(name), what=f"stack {name}"):
        finish_pending(site, name)  # drops the kept records now that the stack is back
    return RestoreResult(name, version, rec.prefix, "archive" if from_archive else "lock",
                         dict(rec.packages), read_lock(rec.prefix) == kept.lock, rec.files,
                         time.monotonic() - t0)


@dataclass(frozen=True)
class Kept:
    """A retired version's kept records that restore acts on, each read and checked."""

    spec: StackSpec
    lock: dict[str, str]  # lock.txt as {name: version}
    manifest: Manifest | None  # for --from-archive: what the archive must hold


def read_kept(r: RetiredRecord, *, manifest: bool) -> Kept:
    """Read every kept record restore needs before anything is made: one missing, not a
    file, not UTF-8 or corrupt is one VerifyError line (exit 6), and nothing is half-published."""
    from sitestack.core.shape import Shape

    hint = "the kept records were changed; restore them from a backup"

    def kept(name: str) -> Shape:
        return Shape(f"the kept {name} {r.records / name}", VerifyError, hint)

    spec = parse_spec(kept(SPEC).text_file(r.records / SPEC), source=r.records / SPEC)
    if spec.name != r.name:  # a rebuild publishes under the spec's name: it must be this one
        kept(SPEC).fail(f"names the stack {spec.name!r}, not {r.name!r}")
    lock: dict[str, str] = {}
    for line in kept(LOCK).text_file(r.records / LOCK).splitlines():
        n, sep, v = line.strip().partition("==")
        if sep:
            lock[n] = v
    if spec.conda is not None:
        from sitestack.conda.records import LOCK_NAME

        kept(LOCK_NAME).text_file(r.records / LOCK_NAME)  # the conda rebuild's lock: there, and text
    man = None
    if manifest:
        man = Manifest.parse(kept(MANIFEST).data_file(r.records / MANIFEST), r.records / MANIFEST)
        rec = kept(STACK_JSON)
        data = rec.table(rec.json_file(r.records / STACK_JSON))
        for key in ("name", "version", "site", "python", "python_xy"):
            rec.text(data.get(key), key)
        if (data["name"], data["version"]) != (r.name, r.version):
            rec.fail(f"is that of {data['name']}/{data['version']}, not {r.ref}")
    return Kept(spec, lock, man)


def _from_lock(site: Site, r: RetiredRecord, kept: Kept, log: BuildLog) -> StackRecord:
    from sitestack.build.stack import build

    spec = kept.spec
    lock_file = r.records / LOCK
    if spec.conda is not None:
        from sitestack.conda.records import LOCK_NAME

        lock_file = r.records / LOCK_NAME
    build(spec, site.root, version=r.version, log=log, from_lock=lock_file, expect_packages=kept.lock)
    return site.get(r.ref)


def _from_archive(site: Site, r: RetiredRecord, log: BuildLog, reader: ArchiveReader, kept: Kept) -> StackRecord:
    root = site.root
    archive = root.archive(r.name, r.version)
    if not archive.is_file():
        raise UsageError(f"{r.ref} has no kept archive ({archive})",
                         hint=f"`sitestack restore {r.ref}` rebuilds it from its kept spec and lock")
    fmt, kind, original = reader.header(archive)
    prefix = root.prefix(r.name, r.version)
    if fmt != "tar.zst" or kind != "stack" or original != str(prefix):
        raise VerifyError(f"{archive} is not the published archive of {r.ref} at {prefix}")
    spec = kept.spec
    with file_lock(root.lock_for(r.name), what=f"stack {r.name}"):
        if prefix.exists():
            raise ConflictError(f"{r.ref} was published meanwhile at {prefix}")
        root.make_folder(root.tmp)  # exact modes, whatever the caller's umask; no link out
        # We hold the name's lock: temps of killed builds and restores of this version go.
        with temp_tree(root.tmp, f"{r.name}-{r.version}-", mode=0o700, locked=True) as tmp:
            log.step(f"unpacking {archive}, checking every file's sha256")
            if kept.manifest is None or reader.unpack(archive, tmp).to_json() != kept.manifest.to_json():
                raise VerifyError(f"{archive} does not match the kept manifest of {r.ref}: "
                                  "it is not the archive of this build")
            stack = tmp / "stack"
            recs = records_dir(stack)
            recs.mkdir(exist_ok=True)
            for kept_file in sorted(r.records.iterdir()):
                if kept_file.is_file() and kept_file.name != RETIRED:
                    shutil.copyfile(kept_file, recs / kept_file.name)
            crash_point("restore:after-unpack")
            rec = StackRecord.load(stack)
            # Command tests may run scripts whose #! names the final path, which does not
            # exist yet: the imports prove the byte-checked copy starts; tests.json keeps the rest.
            quick = dataclasses.replace(spec, tests=dataclasses.replace(spec.tests, commands=()))
            log.step("running smoke tests (imports)")
            run_smoke_tests(quick, stack, rec.python_xy, log)
            make_readonly(stack)
            root.make_folder(prefix.parent)  # exact modes; never published through a link
            publish(stack, prefix, durable=True)
    site.update_state(r.name, lambda s: None)  # modulefiles (and the catalog) come back
    return site.get(r.ref)
