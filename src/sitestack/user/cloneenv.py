"""What a clone gives its user: its `bin/activate` and, with `--module`, a personal Lmod
and Tcl modulefile, both rendered in the terms the site's own modulefiles use."""

from __future__ import annotations

import os
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.records import StackRecord
from sitestack.core.templates import render_file
from sitestack.errors import ConflictError, UsageError

if TYPE_CHECKING:
    from sitestack.site.modulefiles.content import ModuleContent

MODULE_HEADER = "Written by sitestack clone --module."


def module_paths(name: str, module_dir: Path | None, force: bool) -> list[Path]:
    """The .lua and Tcl paths of a personal modulefile; refused if taken (unless `force`)."""
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise UsageError(f"--module {name!r} is not a module name")
    base = Path(os.path.expanduser(str(module_dir) if module_dir else "~/privatemodules"))
    paths = [base / f"{name}.lua", base / name]
    if not force:
        for p in paths:
            if os.path.lexists(p):
                raise ConflictError(f"modulefile {p} already exists", hint="use --force to replace it")
    return paths


def activate_script(prefix: Path, ub_rel: str, rec: StackRecord) -> str:
    """A POSIX-sh activate (bash, zsh, dash) that deactivate undoes exactly; every value goes
    through the sh quoting rule (core.templates), so any path is a path."""
    return render_file("sitestack.user", "clone-activate.sh", {
        "PREFIX": str(prefix), "USER_BASE": ub_rel, "PROMPT": f"({prefix.name}) ",
        "CONDA": "1" if rec.kind == "conda" else ""})


def module_content(prefix: Path, ub_rel: str, rec: StackRecord) -> ModuleContent:
    """The clone's personal modulefile, in the terms every other modulefile is written in."""
    return clone_content(prefix, ub_rel, ref=rec.ref, site=rec.site, python=rec.python,
                         conda=rec.kind == "conda", root=str(rec.root), description=rec.description)


def clone_content(prefix: Path, ub_rel: str, *, ref: str, site: str, python: str, conda: bool,
                  root: str = "", description: str = "") -> ModuleContent:
    """What loading (or `conda activate`) of a clone changes, from what its record says
    (the stack it came from may be gone since)."""
    from sitestack.site.modulefiles.content import ModuleContent

    name, _, version = ref.partition("/")
    return ModuleContent(
        name=name, version=version, prefix=str(prefix), root=root, site=site,
        python=python, description=description, help="", packages=(), family="",
        depends_on=(), setenv=(), prepend_path=(), deprecated=None, conda=conda,
        user_base=ub_rel, clone=True)


def write_modulefiles(paths: list[Path], prefix: Path, ub_rel: str, rec: StackRecord) -> None:
    """A personal Lmod (.lua) and Tcl modulefile for the clone; unload undoes load."""
    from sitestack.core.fsutil import atomic_write_text
    from sitestack.site.modulefiles import lmod, tcl

    lua_path, tcl_path = paths
    c = module_content(prefix, ub_rel, rec)
    atomic_write_text(lua_path, lmod.modulefile(c, MODULE_HEADER))
    atomic_write_text(tcl_path, tcl.modulefile(c, MODULE_HEADER))
