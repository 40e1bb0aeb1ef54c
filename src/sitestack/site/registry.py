"""The site root: published versions, their records, and default/hidden/deprecated state."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.layout import SiteRoot, records_dir
from sitestack.core.records import RETIRED, STACK_JSON, RetiredRecord, StackRecord
from sitestack.core.stackref import split_ref
from sitestack.errors import NotFoundError, UsageError, VerifyError

if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class VersionState:
    is_default: bool
    hidden: bool
    deprecated: str | None


class Site:
    """Read and change one site root. Changes go through the state lock."""

    def __init__(self, root: SiteRoot) -> None:
        self.root = root

    # --- reading -----------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.stacks.is_dir():
            return []
        return sorted(p.name for p in self.root.stacks.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str | None = None) -> list[StackRecord]:
        out = []
        for n in [name] if name else self.names():
            d = self.root.stacks / n
            if not d.is_dir():
                continue
            for v in sorted(d.iterdir()):
                if v.name.startswith(".") or not (records_dir(v) / STACK_JSON).is_file():
                    continue
                try:
                    out.append(StackRecord.load(v))
                except (OSError, KeyError, ValueError, TypeError) as e:
                    # One corrupt record must not hide every other version from `list`.
                    print(f"sitestack: warning: skipping {n}/{v.name}: its {STACK_JSON} is "
                          f"unreadable ({type(e).__name__}: {e})", file=sys.stderr)
        return out

    def retired(self, name: str | None = None) -> list[RetiredRecord]:
        """Retired versions (kept records whose stack is no longer published), oldest name first.

        Records of a version that is published again (a retire killed before its rename, a
        restore killed before it dropped them) are not a retirement: the stack is what counts.
        """
        from sitestack.output import warn

        base = self.root.folder(self.root.retired)
        out = []
        for n in [name] if name else (sorted(p.name for p in base.iterdir()) if base else []):
            d = self.root.folder(self.root.retired / n)
            if d is None:
                continue
            for v in sorted(d.iterdir()):
                if v.name.startswith(".") or self.root.prefix(n, v.name).exists() or \
                        not os.path.lexists(v / RETIRED):
                    continue
                if v.is_symlink() or not v.is_dir():
                    warn(f"skipping {v}: a link, not a folder of the site")
                    continue
                try:
                    out.append(RetiredRecord.load(v))
                except VerifyError as e:  # one bad record must not hide the others
                    warn(f"skipping {n}/{v.name}: {e}")
        return out

    def retired_record(self, name: str, version: str) -> RetiredRecord | None:
        return next((r for r in self.retired(name) if r.version == version), None)

    def state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.root.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        data.setdefault("stacks", {})
        return data

    def stack_state(self, name: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
        s = (state or self.state())["stacks"].get(name, {})
        return {
            "default": s.get("default"),
            "hidden": list(s.get("hidden", [])),
            "deprecated": dict(s.get("deprecated", {})),
        }

    def version_state(self, rec: StackRecord, state: dict[str, Any] | None = None) -> VersionState:
        s = self.stack_state(rec.name, state)
        return VersionState(
            is_default=s["default"] == rec.version,
            hidden=rec.version in s["hidden"],
            deprecated=s["deprecated"].get(rec.version),
        )

    def default_version(self, name: str) -> str | None:
        """The recorded default, else the newest visible version (what module load picks)."""
        s = self.stack_state(name)
        if s["default"] and (self.root.prefix(name, s["default"]) / ".sitestack").is_dir():
            return str(s["default"])
        visible = [r.version for r in self.versions(name) if r.version not in s["hidden"]]
        return visible[-1] if visible else None

    def get(self, ref: str) -> StackRecord:
        name, version = split_ref(ref)
        if version is None:
            version = self.default_version(name)
            if version is None:
                known = ", ".join(self.names()) or "none"
                raise NotFoundError(
                    f"no stack named {name!r} in {self.root.path} (stacks: {known})"
                )
        prefix = self.root.prefix(name, version)
        if not (records_dir(prefix) / STACK_JSON).is_file():
            gone = self.retired_record(name, version)
            if gone is not None:
                raise NotFoundError(f"{gone.ref} was retired on {gone.date}: {gone.message}",
                                    hint=f"sitestack restore {gone.ref}")
            have = ", ".join(r.version for r in self.versions(name)) or "none"
            raise NotFoundError(f"no stack {name}/{version} in {self.root.path} (versions: {have})")
        try:
            return StackRecord.load(prefix)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise VerifyError(f"{name}/{version}: its {records_dir(prefix) / STACK_JSON} is "
                              f"unreadable ({type(e).__name__}: {e})",
                              hint="run `sitestack verify`; the stack's records were changed") from None

    @staticmethod
    def from_prefix(prefix: Path) -> StackRecord | None:
        """The stack a prefix belongs to, from its records, or None."""
        try:
            return StackRecord.load(Path(prefix))
        except (OSError, KeyError, ValueError):
            return None

    # --- changing ------------------------------------------------------------------
    def update_state(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply `change` to one stack's state under the lock, then rewrite its modulefiles."""
        from sitestack.core.fsutil import atomic_write_json, file_lock

        self.require_writer()
        with file_lock(self.root.state_lock, what=f"site root {self.root.path}"):
            state = self.state()
            entry = self.stack_state(name, state)
            change(entry)
            state["stacks"][name] = entry
            atomic_write_json(self.root.state_file, state)
            self.write_modulefiles(name, state)
            self.refresh_catalog()

    def refresh_catalog(self) -> None:
        """Rewrite the configured catalog (`sitestack config catalog DIR`) after a change.

        The change itself has happened by now: a catalog that cannot be written is a warning
        (rerun `sitestack catalog`), never a failed default/deprecate/hide/build.
        """
        import sys

        from sitestack.errors import SitestackError
        from sitestack.site.catalog import refresh_catalog

        try:
            refresh_catalog(self)
        except (SitestackError, OSError) as e:
            print(f"sitestack: warning: catalog not rewritten: {e}; run `sitestack catalog`", file=sys.stderr)

    def require_writer(self) -> None:
        """Changing a site is for its writers: say so in one line (exit 5), before any lock."""
        from sitestack.errors import ConflictError

        for p in (self.root.path, self.root.meta, self.root.lmod_dir):
            if p.exists() and not os.access(p, os.W_OK | os.X_OK):
                raise ConflictError(f"site root {self.root.path} is not writable by this user "
                                    f"({p})", hint="only the site's staff can change its state")

    def write_modulefiles(self, name: str | None = None, state: dict[str, Any] | None = None) -> list[Path]:
        from sitestack.site.modulefiles import write_for_stack

        self.require_writer()

        state = state or self.state()
        written: list[Path] = []
        for n in [name] if name else self.names():
            written += write_for_stack(self.root, self.versions(n), self.stack_state(n, state),
                                       retired=self.retired(n))
        from sitestack.site.kernels import write_site_kernels

        # Every name's: a retired version's stub names another version, maybe of another name.
        return written + write_site_kernels(self, state)

    def set_default(self, ref: str) -> StackRecord:
        rec = self._exact(ref)
        self.update_state(rec.name, lambda s: s.update(default=rec.version))
        return rec

    def deprecate(self, ref: str, message: str) -> StackRecord:
        rec = self._exact(ref)
        if not message.strip():
            raise UsageError("--message must not be empty: users see it when they load the module")
        self.update_state(rec.name, lambda s: s["deprecated"].__setitem__(rec.version, message))
        return rec

    def undeprecate(self, ref: str) -> StackRecord:
        rec = self._exact(ref)
        self.update_state(rec.name, lambda s: s["deprecated"].pop(rec.version, None))
        return rec

    def hide(self, ref: str, hidden: bool = True) -> StackRecord:
        rec = self._exact(ref)

        def change(s: dict[str, Any]) -> None:
            versions = set(s["hidden"])
            (versions.add if hidden else versions.discard)(rec.version)
            s["hidden"] = sorted(versions)

        self.update_state(rec.name, change)
        return rec

    def _exact(self, ref: str) -> StackRecord:
        _name, version = split_ref(ref)
        if version is None:
            raise UsageError(f"{ref!r}: give NAME/VERSION")
        return self.get(ref)
