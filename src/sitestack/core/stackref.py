"""A stack by reference: NAME[/VERSION], the site root it lives in, its record and the fields
that record must hold.

These are the rules `core.layout` (SiteRoot, resolve_root, check_root_path), `core.records`
(StackRecord.load) and `site.registry` (Site.get) follow, kept where importing them costs
nothing: those modules import dataclasses (10-12 ms with inspect), which the start of
`sitestack venv` cannot afford (bench/venv.py). `user/stackchoice.py` reads a stack's record
through these same rules without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.errors import UsageError

if TYPE_CHECKING:
    from typing import Any

RECORDS = ".sitestack"  # PREFIX/.sitestack/: a stack's records (core.records names the files)
STACK_JSON = "stack.json"  # what StackRecord reads
STACKS = "stacks"  # ROOT/stacks/NAME/VERSION: a published stack's prefix
# The root's path is written into modulefiles, activate scripts, pyvenv.cfg, shebangs and
# pip.conf; these characters end or bend a string in one of those languages.
UNSAFE_ROOT_CHARS = "'\"\\$`"


def records_dir(prefix: str | os.PathLike[str]) -> Path:
    return Path(prefix) / RECORDS


def stack_prefix(root: str | os.PathLike[str], name: str, version: str) -> Path:
    """Where NAME/VERSION is published in a site root."""
    return Path(root) / STACKS / name / version


def split_ref(ref: str) -> tuple[str, str | None]:
    """NAME[/VERSION] -> (NAME, VERSION or None); UsageError for anything else."""
    name, _, version = ref.strip("/").partition("/")
    if not name or "/" in version:
        raise UsageError(f"{ref!r} is not NAME or NAME/VERSION")
    return name, version or None


def given_root(cli_root: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """The site root asked for: --root, then $SITESTACK_ROOT, then the root of the loaded module
    ($SITESTACK_STACK_ROOT: a user who ran `module load conda` means that site); None if none."""
    return cli_root or os.environ.get("SITESTACK_ROOT") or os.environ.get("SITESTACK_STACK_ROOT") or None


def unsafe_root_chars(path: str) -> list[str]:
    """The characters of a root's path that no generated file can carry (quotes, '$', '`', '\\',
    control characters), sorted; empty for a safe path."""
    return sorted({c for c in path if c in UNSAFE_ROOT_CHARS or ord(c) < 32 or ord(c) == 127})


class StackPaths:
    """What a stack's record says about its prefix, for every record type (core.records'
    StackRecord, user/stackchoice's QuickStack): its ref and where its Python is."""

    __slots__ = ()
    name: str
    version: str
    prefix: Path
    python_xy: str

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def python_exe(self) -> Path:
        return self.prefix / "bin" / f"python{self.python_xy}"

    @property
    def site_packages(self) -> Path:
        return self.prefix / "lib" / f"python{self.python_xy}" / "site-packages"


def read_stack_json(prefix: str | os.PathLike[str]) -> dict[str, Any]:
    """``PREFIX/.sitestack/stack.json`` as it is; OSError or ValueError if unreadable."""
    data = json.loads((records_dir(prefix) / STACK_JSON).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{STACK_JSON} holds {type(data).__name__}, not an object")
    return data


def stack_fields(prefix: str | os.PathLike[str], data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a StackRecord (all but `user` and `extra`) from stack.json's `data`, each
    converted and checked; KeyError, ValueError or TypeError where the record lacks or
    mistypes one."""
    prefix = Path(prefix)
    return {
        "name": data["name"],
        "version": data["version"],
        "prefix": prefix,
        "root": Path(data.get("root", prefix.parents[2])),
        "site": data["site"],
        "python": data["python"],
        "python_xy": data["python_xy"],
        "kind": data.get("kind", "pypi"),
        "description": data.get("description", ""),
        "built": data.get("built", ""),
        "packages": dict(data.get("packages", {})),
        "module": dict(data.get("module", {})),
        "files": int(data.get("files", 0)),
        "bytes": int(data.get("bytes", 0)),
        "requested": tuple(data.get("requested") or ()),
    }
