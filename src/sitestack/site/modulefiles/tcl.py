"""Environment Modules modulefiles (Tcl), rendered from the templates in ``templates/*.tcl``.

The bodies are package data; this module only decides which optional parts a
``ModuleContent`` needs and builds the repeated lines (module-whatis, depends-on, pushenv,
...) from values quoted by ``q``, the one Tcl quoting rule (core.templates.tcl_quote).
"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.core.templates import render_file, tcl_quote

if TYPE_CHECKING:
    from sitestack.site.modulefiles.content import ModuleContent

PACKAGE = "sitestack.site.modulefiles"

# One quoting rule per language, shared with the templates (core.templates).
q = tcl_quote


def part(name: str, values: dict[str, str] | None = None, raw: dict[str, str] | None = None) -> str:
    """A rendered template without its final newline: a block for a `__NAME__` line."""
    return render_file(PACKAGE, name, values or {}, raw).removesuffix("\n")


def commands(cmd: str, *args_list: tuple[str, ...]) -> str:
    """One `cmd arg ...` line per argument tuple, every argument quoted."""
    return "\n".join(" ".join([cmd, *(q(a) for a in args)]) for args in args_list)


def modulefile(c: ModuleContent, header: str) -> str:
    ref = f"{c.name}/{c.version}"
    extensions = ""
    if c.extensions:
        extensions = part("extensions.tcl", raw={"NAMES": " ".join(q(e) for e in c.extensions)})
    identity = part("clone-env.tcl") if c.clone else part("stack-env.tcl", {"REF": ref, "ROOT": c.root})
    conda = ""
    if c.conda:
        conda = part("conda-clone.tcl") if c.clone else part("conda-env.tcl", {"REF": ref})
    if c.conda_shell is not None and not c.clone:
        conda = "\n".join(x for x in (conda, commands("pushenv", *c.conda_shell.env),
                                      commands("prepend-path", *(("PATH", p) for p in c.conda_shell.path))) if x)
    deprecated = ""
    if c.deprecated:
        deprecated = part("deprecated.tcl", {"MESSAGE": f"{ref} is deprecated: {c.deprecated}"})
    return render_file(PACKAGE, "stack.tcl", {"HELP": c.help_text, "PREFIX": c.prefix}, raw={
        "HEADER": header,
        "WHATIS": commands("module-whatis", *((w,) for w in c.whatis)),
        "EXTENSIONS": extensions,
        "FAMILY": commands("family", (c.family,)) if c.family else "",
        "DEPENDS_ON": commands("depends-on", *((d,) for d in c.depends_on)),
        "USER_BASE": " ".join(q(p) for p in c.user_base_parts),
        "IDENTITY": identity,
        "CONDA": conda,
        "SETENV": commands("pushenv", *c.setenv),
        "PREPEND_PATH": commands("prepend-path", *c.prepend_path),
        "TOOL": commands("prepend-path", ("PATH", c.tool)) if c.tool and not c.clone else "",
        "FRONT_DOOR": front_door(c),
        "DEPRECATED": deprecated,
    })


def front_door(c: ModuleContent) -> str:
    """The `conda` shell function, the variables kept for unload, and (sitestack's own front
    door) what unload takes back from it."""
    from sitestack.site.modulefiles.content import (
        FRONT_DOOR_PATHS,
        FRONT_DOOR_STATE,
        FRONT_DOOR_UNSET,
    )

    if not c.functions:
        return ""
    lines = [commands("set-function", *c.functions),
             part("keep.tcl", raw={"KEEP": " ".join(q(v) for v in c.kept)})]
    if c.front_door:
        lines.append(part("front-door.tcl", {"STATE": FRONT_DOOR_STATE, "PATHS": FRONT_DOOR_PATHS,
                                             "UNSET": FRONT_DOOR_UNSET}))
    return "\n".join(lines)


def modulerc(name: str, default: str | None, hidden: list[str], header: str) -> str:
    return render_file(PACKAGE, "modulerc.tcl", {}, raw={
        "HEADER": header,
        "DEFAULT": f"module-version {q(name + '/' + default)} default" if default else "",
        "HIDDEN": commands("module-hide", *((f"{name}/{v}",) for v in hidden)),
    })
