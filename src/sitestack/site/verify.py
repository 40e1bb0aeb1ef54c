"""`sitestack verify`: is each published stack byte-for-byte as built, and still read-only?"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.core.layout import RECORDS, SiteRoot
from sitestack.core.manifest import Manifest, verify
from sitestack.core.records import MANIFEST
from sitestack.core.shape import Shape
from sitestack.errors import VerifyError
from sitestack.site.registry import Site

# Enough to act on; a stack someone chmod'ed recursively would list every file.
MAX_WRITABLE = 20


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the prefix
    problem: str  # what core.manifest.verify says ("changed", "missing", ...) or "writable"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "problem": self.problem}


@dataclass(frozen=True)
class StackCheck:
    stack: str
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "ok": self.ok, "problems": [p.to_json() for p in self.problems]}


@dataclass(frozen=True)
class VerifyReport:
    stacks: tuple[StackCheck, ...]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stacks)

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.stacks]


def writable_paths(prefix: Path) -> list[str]:
    """Files and folders under `prefix` that anyone may write (symlinks' modes mean nothing)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(prefix):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o222:
                out.append(os.path.relpath(p, prefix))
    return out


def verify_stacks(root: SiteRoot, ref: str | None = None) -> VerifyReport:
    """Check `ref` (default: every version) against its manifest, modes included. A manifest
    that cannot be read is an error for `ref`, and one stack's problem among every version."""
    site = Site(root)
    recs = [site.get(ref)] if ref else site.versions()
    checks = []
    for rec in recs:
        writable = tuple(Problem(p, "writable") for p in writable_paths(rec.prefix)[:MAX_WRITABLE])
        try:
            manifest = Manifest.parse(Shape(str(rec.records / MANIFEST)).data_file(rec.records / MANIFEST),
                                      rec.records / MANIFEST)
        except VerifyError as e:
            if ref:
                raise  # the one stack asked for cannot be verified: exit 6, one line
            # Across the site it is this stack's problem: the others are still verified (exit 1).
            checks.append(StackCheck(rec.ref, (Problem(f"{RECORDS}/{MANIFEST}", f"unreadable: {e}"), *writable)))
            continue
        changed = verify(rec.prefix, manifest, check_mode=True)
        checks.append(StackCheck(rec.ref, tuple(Problem(m.path, m.problem) for m in changed) + writable))
    return VerifyReport(tuple(checks))
