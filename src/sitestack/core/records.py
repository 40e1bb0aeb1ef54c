"""A stack's records: the file names under ``PREFIX/.sitestack/`` and the ``stack.json`` schema.

This module and ``core.stackref`` (the folder, ``stack.json``'s name and the fields it must
hold, importable without dataclasses) are the only places that know these names and keys.
``build`` writes records through ``stack_json``/``write_lock_txt``; everyone else reads them
through ``StackRecord``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.stackref import STACK_JSON as STACK_JSON  # its name, with the reader's rules
from sitestack.core.stackref import StackPaths, read_stack_json, records_dir, stack_fields

if TYPE_CHECKING:
    from typing import Any

# Files under PREFIX/.sitestack/ (read-only like the rest of the stack).
SPEC = "spec.toml"  # the spec text as built
LOCK = "lock.txt"  # name==version per line
MANIFEST = "manifest.json"  # sha256 of every file (core.manifest.Manifest)
TREE = "tree.marshal"  # the manifest's folders, files and sizes, links: a clone's plan (core.copytree)
PREFIX_FILES = "prefix-files.json"  # files that name the prefix (relocation list)
BUILD_LOG = "build.log"
TESTS = "tests.json"  # smoke-test results at build time
# Files under LAYER/.sitestack/ (a layer's own records, written by `sitestack install`).
LAYER_REQUESTED = "requested.json"  # what the user asked `sitestack install` for
LAYER_CONSTRAINTS = "constraints.txt"  # the stack's [user] constraints, named by the layer's pip.conf
LAYER_PIP_CONF = "pip.conf"  # in the layer's root: pip reads $VIRTUAL_ENV/pip.conf
RETIRED = "retired.json"  # only in ROOT/.sitestack/retired/NAME/VERSION/: date, message


def user_base_rel(site: str, name: str, version: str) -> str:
    """The per-version PYTHONUSERBASE relative to $HOME: ``.local/SITE/NAME/VERSION``.

    The one place that says where user bases live: modulefiles, clones (``sitestack/clones/
    NAME-HASH``), `show` and the user side all take it from here.
    """
    return f".local/{site}/{name}/{version}"


def user_base(site: str, name: str, version: str, home: str | None = None) -> Path:
    """The per-version PYTHONUSERBASE: ``~/.local/SITE/NAME/VERSION`` (never shared by versions)."""
    home = home or os.path.expanduser("~")
    return Path(home) / user_base_rel(site, name, version)


@dataclass(frozen=True)
class UserPolicy:
    """The spec's ``[user]`` table: how packages are installed into layers on the stack."""

    find_links: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_url: tuple[str, ...] = ()
    no_index: bool = False
    constraints: tuple[str, ...] = ()
    only_binary: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.find_links or self.index_url or self.extra_index_url or self.no_index
                    or self.constraints or self.only_binary)

    def to_json(self) -> dict[str, Any]:
        return {"find-links": list(self.find_links), "index-url": self.index_url,
                "extra-index-url": list(self.extra_index_url), "no-index": self.no_index,
                "constraints": list(self.constraints), "only-binary": list(self.only_binary)}

    @classmethod
    def from_json(cls, data: Any) -> UserPolicy:
        """The table as stack.json holds it; ValueError (an unreadable record) where a value
        is not what the writer wrote (a string where a list belongs is not read per character)."""
        if not isinstance(data, dict):
            return cls()

        def texts(key: str) -> tuple[str, ...]:
            v = data.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"user.{key} is not a list of strings")
            return tuple(v)

        index = data.get("index-url") or None
        if index is not None and not isinstance(index, str):
            raise ValueError("user.index-url is not a string")
        return cls(texts("find-links"), index, texts("extra-index-url"), bool(data.get("no-index", False)),
                   texts("constraints"), texts("only-binary"))


def lock_text(packages: dict[str, str]) -> str:
    return "".join(f"{n}=={v}\n" for n, v in sorted(packages.items()))


def read_lock(prefix: Path) -> dict[str, str]:
    """{name: version} from ``lock.txt``."""
    out: dict[str, str] = {}
    for line in (records_dir(prefix) / LOCK).read_text(encoding="utf-8").splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            out[name] = version
    return out


def stack_json(
    *, name: str, version: str, site: str, description: str, kind: str, python: str,
    python_xy: str, prefix: Path, root: Path, tool_version: str, built: str,
    packages: dict[str, str], files: int, bytes_: int, module: dict[str, Any],
    extra: dict[str, Any] | None = None, user: UserPolicy | None = None,
    requested: list[str] | None = None,
) -> dict[str, Any]:
    """The ``stack.json`` document, the one writer of its schema."""
    return {
        "name": name, "version": version, "site": site, "description": description,
        "kind": kind, "python": python, "python_xy": python_xy,
        "prefix": str(prefix), "root": str(root), "sitestack": tool_version, "built": built,
        "packages": packages, "files": files, "bytes": bytes_, "module": module,
        "user": (user or UserPolicy()).to_json(),
        # The spec's own requirements (canonical names), in its order: what the site asked for.
        "requested": list(requested or []), **(extra or {}),
    }


@dataclass(frozen=True)
class StackRecord(StackPaths):
    """What `.sitestack/stack.json` says about one published version."""

    name: str
    version: str
    prefix: Path
    root: Path
    site: str
    python: str
    python_xy: str
    kind: str
    description: str
    built: str
    packages: dict[str, str]
    module: dict[str, Any]
    files: int = 0
    bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    user: UserPolicy = field(default_factory=UserPolicy)  # the spec's [user] table
    requested: tuple[str, ...] = ()  # the spec's requirements by name (modulefile help/whatis)

    @property
    def records(self) -> Path:
        return records_dir(self.prefix)

    def user_base(self, home: str | None = None) -> Path:
        return user_base(self.site, self.name, self.version, home)

    @classmethod
    def load(cls, prefix: Path) -> StackRecord:
        """Read ``PREFIX/.sitestack/stack.json``; OSError, KeyError or ValueError if unreadable."""
        data = read_stack_json(prefix)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(**stack_fields(prefix, data), user=UserPolicy.from_json(data.get("user")),
                   extra={k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True)
class RetiredRecord:
    """What ``ROOT/.sitestack/retired/NAME/VERSION/retired.json`` says about a retired version."""

    name: str
    version: str
    date: str  # YYYY-MM-DD
    message: str
    prefix: Path  # where the stack was published (and where restore puts it back)
    records: Path  # the folder holding the kept records
    keep_archive: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "retired": self.date,
                "message": self.message, "prefix": str(self.prefix), "keep_archive": self.keep_archive}

    @classmethod
    def load(cls, records: Path) -> RetiredRecord:
        """Read ``ROOT/.sitestack/retired/NAME/VERSION/retired.json``, the one reader of it.

        Its name and version are used as paths (stub modulefiles, the archive gc removes), so
        they must be the names of the folders it is in (checked by core.safepath.component);
        every value must have the type the writer gave it, and the message, which stubs and
        `module load` show, one line. Anything else: VerifyError (exit 6), one line.
        """
        from sitestack.core.safepath import component
        from sitestack.core.shape import Shape
        from sitestack.errors import VerifyError

        records = Path(records)
        shape = Shape(str(records / RETIRED), VerifyError,
                      hint="the site's retired records were changed; restore the file from a backup")
        data = shape.table(shape.json_file(records / RETIRED))
        for key, folder in (("name", records.parent.name), ("version", records.name)):
            value = component(shape.text(data.get(key), key), f"{records / RETIRED}: {key}", VerifyError)
            if value != folder:
                shape.fail(f"{key} {value!r} is not that of the folder it is in ({folder!r})")
        prefix = shape.text(data.get("prefix"), "prefix")
        if not os.path.isabs(prefix):
            shape.fail(f"prefix {prefix!r} is not an absolute path")
        return cls(name=records.parent.name, version=records.name, date=shape.text(data.get("retired"), "retired"),
                   message=shape.text(data.get("message", ""), "message"), prefix=Path(prefix),
                   records=records, keep_archive=shape.flag(data.get("keep_archive", False), "keep_archive"))
