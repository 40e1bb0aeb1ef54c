"""Lmod (.lua) and Environment Modules (Tcl) modulefiles, written from stack records.

Both formats describe one `ModuleContent`, so the two writers cannot drift apart.
Every value from a spec is escaped by the writer of each language; no file uses
execute{} / system calls, so unload is exactly the reverse of load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import lmod, tcl

if TYPE_CHECKING:
    from ..layout import SiteRoot
    from ..site import StackRecord

HEADER = "Written by sitestack; do not edit. Run `sitestack modulefiles` to rewrite."
MAIN_PACKAGES = 12


@dataclass(frozen=True)
class ModuleContent:
    name: str
    version: str
    prefix: str
    root: str
    site: str
    python: str
    description: str
    help: str
    packages: tuple[tuple[str, str], ...]
    family: str
    depends_on: tuple[str, ...]
    setenv: tuple[tuple[str, str], ...]
    prepend_path: tuple[tuple[str, str], ...]  # (VAR, path) in the order to prepend
    deprecated: str | None
    conda: bool = False

    @property
    def whatis(self) -> list[str]:
        pkgs = ", ".join(f"{n} {v}" for n, v in self.packages[:MAIN_PACKAGES])
        more = f" and {len(self.packages) - MAIN_PACKAGES} more" if len(self.packages) > MAIN_PACKAGES else ""
        lines = [f"Name: {self.name}", f"Version: {self.version}", f"Python: {self.python}"]
        if self.description:
            lines.append(f"Description: {self.description}")
        lines.append(f"Packages: {pkgs}{more}" if pkgs else "Packages: none")
        return lines

    @property
    def help_text(self) -> str:
        parts = [f"{self.name}/{self.version}: Python {self.python} stack"]
        if self.description:
            parts.append(self.description)
        if self.help:
            parts.append(self.help)
        parts.append("Main packages: " + (", ".join(f"{n} {v}" for n, v in self.packages[:MAIN_PACKAGES]) or "none"))
        parts.append(
            "Extend it: `sitestack venv DIR` (layer), `sitestack clone` (writable copy), "
            "or `pip install --user` (goes to $PYTHONUSERBASE, this version only)."
        )
        return "\n".join(parts)


def content_for(rec: StackRecord, state: dict[str, Any]) -> ModuleContent:
    mod = rec.module
    prepend = tuple((var, p) for var, paths in mod.get("prepend_path", {}).items() for p in paths)
    return ModuleContent(
        name=rec.name,
        version=rec.version,
        prefix=str(rec.prefix),
        root=str(rec.root),
        site=rec.site,
        python=rec.python,
        description=rec.description,
        help=mod.get("help", ""),
        packages=tuple(sorted(rec.packages.items())),
        family=mod.get("family", "python"),
        depends_on=tuple(mod.get("depends_on", ())),
        setenv=tuple(sorted(mod.get("setenv", {}).items())),
        prepend_path=prepend,
        deprecated=state["deprecated"].get(rec.version),
        conda=rec.kind == "conda",
    )


def write_for_stack(root: SiteRoot, records: Iterable[StackRecord], state: dict[str, Any]) -> list[Path]:
    """Write both modulefiles of every version, both .modulerc files, and drop stale files."""
    from ..fsutil import atomic_write_text

    records = list(records)
    if not records:
        return []
    name = records[0].name
    written: list[Path] = []
    lmod_dir, tcl_dir = root.lmod_dir / name, root.tcl_dir / name
    for rec in records:
        c = content_for(rec, state)
        for path, text in ((lmod_dir / f"{rec.version}.lua", lmod.modulefile(c, HEADER)),
                           (tcl_dir / rec.version, tcl.modulefile(c, HEADER))):
            atomic_write_text(path, text)
            written.append(path)
    versions = [r.version for r in records]
    default = state["default"] if state["default"] in versions else None
    hidden = [v for v in state["hidden"] if v in versions]
    for path, text in ((lmod_dir / ".modulerc.lua", lmod.modulerc(name, default, hidden, HEADER)),
                       (tcl_dir / ".modulerc", tcl.modulerc(name, default, hidden, HEADER))):
        atomic_write_text(path, text)
        written.append(path)
    keep = {p.name for p in written}
    for d in (lmod_dir, tcl_dir):
        for f in d.iterdir():
            if f.name not in keep and f.is_file() and HEADER in f.read_text(errors="replace")[:400]:
                f.unlink()  # a version that no longer exists; only our own files
    return written
