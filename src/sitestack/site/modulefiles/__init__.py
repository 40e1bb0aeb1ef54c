"""Lmod (.lua) and Environment Modules (Tcl) modulefiles, written from stack records.

Both formats describe one `ModuleContent`, so the two writers cannot drift apart.
Every value from a spec is escaped by the writer of each language; no file uses
execute{} / system calls, so unload is exactly the reverse of load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sitestack import TYPE_CHECKING
from sitestack.site.modulefiles import lmod, tcl
from sitestack.site.modulefiles.content import HEADER, CondaShell, ModuleContent

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot
    from sitestack.core.records import RetiredRecord, StackRecord

def content_for(rec: StackRecord, state: dict[str, Any]) -> ModuleContent:
    from sitestack.core.layout import SiteRoot
    from sitestack.site.sitetool import tool_bin

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
        requested=rec.requested,
        tool=tool_bin(SiteRoot(rec.root)),
        conda_shell=CondaShell.from_json(rec.extra.get("conda_shell")) if rec.kind == "conda" else None,
    )


def write_for_stack(root: SiteRoot, records: Iterable[StackRecord], state: dict[str, Any],
                    retired: Iterable[RetiredRecord] = ()) -> list[Path]:
    """Write both modulefiles of every version, both .modulerc files, and drop stale files.

    A retired version gets a hidden stub whose load fails with the date and message.
    """
    from sitestack.core.fsutil import atomic_write_text
    from sitestack.site.modulefiles.retired import lmod_stub, tcl_stub

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
    gone = [r for r in retired if r.name == name]
    for r in gone:
        for path, text in ((lmod_dir / f"{r.version}.lua", lmod_stub(r, HEADER)),
                           (tcl_dir / r.version, tcl_stub(r, HEADER))):
            atomic_write_text(path, text)
            written.append(path)
    versions = [r.version for r in records]
    default = state["default"] if state["default"] in versions else None
    hidden = [v for v in state["hidden"] if v in versions] + [r.version for r in gone]
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
