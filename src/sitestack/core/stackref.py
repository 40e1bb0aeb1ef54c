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
    """NAME[/VERSION] -> (NAME, VERSION or None); UsageError (exit 2, one line) for anything
    else. Each part is one plain path component (core.safepath.component): '..', a control
    character or a 5,000-character VERSION is refused here, before it becomes part of a path,
    in every command that takes a NAME[/VERSION]."""
    from sitestack.core.safepath import component, shown_name

    name, _, version = ref.strip("/").partition("/")
    if not name or "/" in version:
        raise UsageError(f"{shown_name(ref)} is not NAME or NAME/VERSION")
    try:
        component(name, "its name")
        if version:
            component(version, "its version")
    except UsageError as e:
        raise UsageError(f"{shown_name(ref)} is not NAME/VERSION: {e}") from None
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
    try:
        data = json.loads((records_dir(prefix) / STACK_JSON).read_text(encoding="utf-8"))
    except RecursionError:  # nested deeper than the parser recurses: as unreadable as any
        raise ValueError(f"{STACK_JSON} is nested too deep") from None
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
        "module": _module(data.get("module", {})),
        "files": int(data.get("files", 0)),
        "bytes": int(data.get("bytes", 0)),
        "requested": _one_line_list(data.get("requested") or [], "requested"),
    }


def _one_line(value: Any, key: str) -> str:
    """A string that modulefiles and shell code may carry (core.shape.line_safe); ValueError,
    which StackRecord.load's callers report as an unreadable record, otherwise."""
    from sitestack.core.shape import line_safe

    if not isinstance(value, str) or not line_safe(value):
        raise ValueError(f"{key} is not a one-line string")
    return value


def _one_line_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{key} is not a list")
    return tuple(_one_line(v, key) for v in value)


def _module(value: Any) -> dict[str, Any]:
    """stack.json's module table, as the spec let it in: every value the modulefiles and
    `sitestack load` set or name (setenv, prepend_path, family, depends_on) one line (the
    help text may have several: it is only shown, quoted). The spec refused the rest
    already; a record changed since is refused here, before a modulefile is written from it."""
    if not isinstance(value, dict):
        raise ValueError("module is not a table")
    setenv, prepend = value.get("setenv", {}), value.get("prepend_path", {})
    if not isinstance(setenv, dict) or not isinstance(prepend, dict):
        raise ValueError("module.setenv and module.prepend_path must be tables")
    for k, v in setenv.items():
        _one_line(k, "module.setenv")
        _one_line(v, f"module.setenv.{k}")
    for k, v in prepend.items():
        _one_line(k, "module.prepend_path")
        _one_line_list(v, f"module.prepend_path.{k}")
    _one_line(value.get("family", ""), "module.family")
    _one_line_list(value.get("depends_on", []), "module.depends_on")
    return dict(value)
