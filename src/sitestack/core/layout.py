"""Where things live in a site root. One small frozen object, passed explicitly.

ROOT/stacks/NAME/VERSION/              the stack prefix (read-only once published)
ROOT/stacks/NAME/VERSION/.sitestack/   its records: stack.json, spec.toml, lock.txt,
                                       manifest.json, tree.marshal (a clone's plan of it),
                                       prefix-files.json, build.log, tests.json
ROOT/modulefiles/NAME/VERSION.lua      Lmod, with NAME/.modulerc.lua
ROOT/modulefiles-tcl/NAME/VERSION      Environment Modules, with NAME/.modulerc
ROOT/archives/NAME/VERSION.tar.zst     optional, from `pack --publish`: what `stage` reads
ROOT/archives/NAME/VERSION.sqfs        optional, from `pack --publish --format squashfs --to DIR`: what `stage --mount` mounts
ROOT/.sitestack/state.json             default / hidden / deprecated per stack name
ROOT/.sitestack/locks/                 lock files
ROOT/.sitestack/tmp/                   builds in progress (same filesystem as stacks/)
ROOT/.sitestack/retired/NAME/VERSION/  records of a retired version (site/retire.py)
ROOT/.sitestack/checked/NAME/VERSION   which files last matched their sha256 (core/checked.py)
ROOT/.sitestack/trash/                 retired stacks being deleted (same filesystem as stacks/)
ROOT/.sitestack/tools/ID/              the sitestack users run: bin/{sitestack,conda}, its own
                                       python/ (build/sitetool.py); tool.json names the current one
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The rules below come from core.stackref (importable without dataclasses); records_dir is
# imported from here by most of the tree.
from sitestack.core.stackref import (
    RECORDS,
    STACK_JSON,
    STACKS,
    given_root,
    stack_prefix,
    unsafe_root_chars,
)
from sitestack.core.stackref import records_dir as records_dir


@dataclass(frozen=True)
class SiteRoot:
    path: Path

    @property
    def stacks(self) -> Path:
        return self.path / STACKS

    @property
    def lmod_dir(self) -> Path:
        return self.path / "modulefiles"

    @property
    def tcl_dir(self) -> Path:
        return self.path / "modulefiles-tcl"

    @property
    def meta(self) -> Path:
        return self.path / RECORDS

    @property
    def state_file(self) -> Path:
        return self.meta / "state.json"

    @property
    def locks(self) -> Path:
        return self.meta / "locks"

    @property
    def tmp(self) -> Path:
        return self.meta / "tmp"

    @property
    def retired(self) -> Path:
        return self.meta / "retired"

    def retired_dir(self, name: str, version: str) -> Path:
        """The kept records of a retired NAME/VERSION (a copy of its .sitestack/, plus retired.json)."""
        return self.retired / name / version

    @property
    def trash(self) -> Path:
        return self.meta / "trash"

    @property
    def tools(self) -> Path:
        """The site's own sitestack for users, one read-only folder per build of it."""
        return self.meta / "tools"

    @property
    def tool_record(self) -> Path:
        """Which of `tools` the modulefiles put on PATH (site/sitetool.py reads it)."""
        return self.meta / "tool.json"

    def checked(self, name: str, version: str) -> Path:
        """Which files of NAME/VERSION last matched their sha256, by inode and ctime (a pack's)."""
        return self.meta / "checked" / name / version

    def prefix(self, name: str, version: str) -> Path:
        return stack_prefix(self.path, name, version)

    def archive(self, name: str, version: str) -> Path:
        """Where `sitestack pack NAME/VERSION --publish` puts the stack's archive for stage."""
        return self.path / "archives" / name / f"{version}.tar.zst"

    def image(self, name: str, version: str) -> Path:
        """Where `pack NAME/VERSION --publish --format squashfs --to DIR` puts the image that
        `stage --mount --to DIR` mounts."""
        return self.path / "archives" / name / f"{version}.sqfs"

    def folder(self, path: Path) -> Path | None:
        """`path` (below the root) if it is a folder reached from the root without any link,
        else None; a link there (planted by hand) is reported on stderr and left alone.
        Whatever sitestack deletes in is looked up through this, so a link at
        .sitestack/trash/NAME cannot take a removal out of the site."""
        from sitestack.core.safepath import plain_dir

        d = plain_dir(self.path, os.path.relpath(path, self.path))
        if d is None and os.path.islink(path):
            from sitestack.output import warn

            warn(f"{path} is a link, not a folder of the site: left alone (remove it by hand)")
        return d

    def make_folder(self, path: Path) -> Path:
        """`path`, made where missing with exact modes (fsutil.make_dirs), to write in:
        VerifyError if it is reached through a link (what sitestack puts there would land, and
        later be deleted, outside the site)."""
        from sitestack.core.fsutil import make_dirs
        from sitestack.core.safepath import plain_dir
        from sitestack.errors import VerifyError

        make_dirs(path)
        d = plain_dir(self.path, os.path.relpath(path, self.path))
        if d is None:
            raise VerifyError(f"{path} is not a folder of the site (a link?): remove it, then retry")
        return d

    def lock_for(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    @property
    def state_lock(self) -> Path:
        return self.locks / "state.lock"


def newest_records(root: SiteRoot, name: str) -> Path | None:
    """The records folder of the newest published version of `name` (by its stack.json's
    mtime), or None: what the next dated version of a stack most likely repeats."""
    newest: tuple[int, Path] | None = None
    try:
        versions = list(os.scandir(root.stacks / name))
    except OSError:
        return None
    for v in versions:
        if v.name.startswith(".") or not v.is_dir(follow_symlinks=False):
            continue
        try:
            st = os.lstat(os.path.join(v.path, RECORDS, STACK_JSON))
        except OSError:
            continue
        if newest is None or st.st_mtime_ns > newest[0]:
            newest = (st.st_mtime_ns, Path(v.path, RECORDS))
    return newest[1] if newest else None


def default_root() -> Path:
    from platformdirs import user_data_dir  # lazy: start-up time matters for `venv`

    return Path(user_data_dir("sitestack", appauthor=False))


def resolve_root(cli_root: str | os.PathLike[str] | None) -> SiteRoot:
    """--root, then SITESTACK_ROOT, then the root of the loaded module, then a per-user folder."""
    raw = given_root(cli_root) or default_root()
    return check_root_path(SiteRoot(Path(os.path.abspath(os.path.expanduser(raw)))))


def check_root_path(root: SiteRoot) -> SiteRoot:
    """Refuse, up front, a root that is a file or whose path no generated file can carry."""
    from sitestack.errors import UsageError

    p = str(root.path)
    bad = unsafe_root_chars(p)
    if bad:
        raise UsageError(f"site root {p!r} contains {' '.join(repr(c) for c in bad)}, which the "
                         "modulefiles and scripts sitestack writes cannot carry safely",
                         hint="choose a site root path without quotes, '$', '`', '\\' or "
                              "control characters")
    if os.path.exists(p) and not os.path.isdir(p):
        raise UsageError(f"site root {p} is a file, not a folder")
    return root
