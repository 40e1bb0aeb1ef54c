"""Lmod modulefiles (.lua), rendered from the templates in ``templates/*.lua``.

The bodies are package data; this module only decides which optional parts a
``ModuleContent`` needs and builds the repeated lines (whatis, depends_on, setenv, ...)
from values quoted by ``q``, the one Lua quoting rule (core.templates.lua_quote).
"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.core.templates import lua_quote, render_file

if TYPE_CHECKING:
    from sitestack.site.modulefiles.content import ModuleContent

PACKAGE = "sitestack.site.modulefiles"

# One quoting rule per language, shared with the templates (core.templates).
q = lua_quote


def part(name: str, values: dict[str, str] | None = None, raw: dict[str, str] | None = None) -> str:
    """A rendered template without its final newline: a block for a `__NAME__` line."""
    return render_file(PACKAGE, name, values or {}, raw).removesuffix("\n")


def calls(fn: str, *args_list: tuple[str, ...]) -> str:
    """One `fn(arg, ...)` line per argument tuple, every argument quoted."""
    return "\n".join(f"{fn}({', '.join(q(a) for a in args)})" for args in args_list)


def modulefile(c: ModuleContent, header: str) -> str:
    ref = f"{c.name}/{c.version}"
    extensions = ""
    if c.extensions:
        extensions = part("extensions.lua", raw={"NAMES": ",\n".join(f"  {q(e)}" for e in c.extensions)})
    identity = part("clone-env.lua") if c.clone else part("stack-env.lua", {"REF": ref, "ROOT": c.root})
    conda = ""
    if c.conda:
        conda = part("conda-clone.lua") if c.clone else part("conda-env.lua", {"REF": ref})
    if c.conda_shell is not None and not c.clone:
        conda = "\n".join(x for x in (conda, calls("pushenv", *c.conda_shell.env),
                                      calls("prepend_path", *(("PATH", p) for p in c.conda_shell.path))) if x)
    deprecated = ""
    if c.deprecated:
        deprecated = part("deprecated.lua", {"MESSAGE": f"{ref} is deprecated: {c.deprecated}"})
    return render_file(PACKAGE, "stack.lua", {"HELP": c.help_text, "PREFIX": c.prefix}, raw={
        "HEADER": header,
        "WHATIS": calls("whatis", *((w,) for w in c.whatis)),
        "EXTENSIONS": extensions,
        "FAMILY": calls("family", (c.family,)) if c.family else "",
        "DEPENDS_ON": calls("depends_on", *((d,) for d in c.depends_on)),
        "USER_BASE": ", ".join(q(p) for p in c.user_base_parts),
        "IDENTITY": identity,
        "CONDA": conda,
        "SETENV": calls("pushenv", *c.setenv),
        "PREPEND_PATH": calls("prepend_path", *c.prepend_path),
        "TOOL": calls("prepend_path", ("PATH", c.tool)) if c.tool and not c.clone else "",
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
    lines = [calls("set_shell_function", *((name, body, "") for name, body in c.functions)),
             part("keep.lua", raw={"KEEP": ", ".join(q(v) for v in c.kept)})]
    if c.front_door:
        lines.append(part("front-door.lua", {"STATE": FRONT_DOOR_STATE, "PATHS": FRONT_DOOR_PATHS,
                                             "UNSET": FRONT_DOOR_UNSET}))
    return "\n".join(lines)


def modulerc(name: str, default: str | None, hidden: list[str], header: str) -> str:
    return render_file(PACKAGE, "modulerc.lua", {}, raw={
        "HEADER": header,
        "DEFAULT": f"module_version({q(name + '/' + default)}, \"default\")" if default else "",
        "HIDDEN": calls("hide_version", *((f"{name}/{v}",) for v in hidden)),
    })
