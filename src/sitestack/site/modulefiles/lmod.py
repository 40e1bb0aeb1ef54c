"""Lmod modulefiles (.lua)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sitestack.core.templates import lua_quote

if TYPE_CHECKING:
    from sitestack.site.modulefiles.content import ModuleContent


# One quoting rule per language, shared with the templates (core.templates).
q = lua_quote


def modulefile(c: ModuleContent, header: str) -> str:
    L = [f"-- {header}", f"help({q(c.help_text)})"]
    L += [f"whatis({q(w)})" for w in c.whatis]
    if c.extensions:
        # One argument per line: spider lists each as NAME/VERSION (E), provided by this module.
        L.append("extensions(\n  " + ",\n  ".join(q(e) for e in c.extensions) + "\n)")
    if c.family:
        L.append(f"family({q(c.family)})")
    L += [f"depends_on({q(d)})" for d in c.depends_on]
    L += [
        f"local prefix = {q(c.prefix)}",
        # HOME is read at load time, so one modulefile serves every user.
        'local home = os.getenv("HOME") or ""',
        f"local userbase = pathJoin(home, {', '.join(q(p) for p in c.user_base_parts)})",
        'prepend_path("PATH", pathJoin(prefix, "bin"))',
        # pushenv, not setenv: unload restores a value the user had before.
        'pushenv("PYTHONUSERBASE", userbase)',
        'prepend_path("PATH", pathJoin(userbase, "bin"))',
    ]
    if c.clone:
        L.append('pushenv("SITESTACK_CLONE", prefix)')
        L += ['pushenv("CONDA_PREFIX", prefix)'] if c.conda else []
    else:
        L += [
            f"pushenv(\"SITESTACK_STACK\", {q(c.name + '/' + c.version)})",
            'pushenv("SITESTACK_PREFIX", prefix)',
            f"pushenv(\"SITESTACK_STACK_ROOT\", {q(c.root)})",
        ]
    if c.conda and not c.clone:
        L += [
            'pushenv("CONDA_PREFIX", prefix)',
            f"pushenv(\"CONDA_DEFAULT_ENV\", {q(c.name + '/' + c.version)})",
            'pushenv("CONDA_SHLVL", "1")',
            'pushenv("CONDA_PROMPT_MODIFIER", "")',
        ]
    L += [f"pushenv({q(k)}, {q(v)})" for k, v in c.setenv]
    L += [f"prepend_path({q(k)}, {q(v)})" for k, v in c.prepend_path]
    if c.deprecated:
        L += [
            'if (mode() == "load") then',
            f"  LmodMessage({q(f'{c.name}/{c.version} is deprecated: {c.deprecated}')})",
            "end",
        ]
    return "\n".join(L) + "\n"


def modulerc(name: str, default: str | None, hidden: list[str], header: str) -> str:
    L = [f"-- {header}"]
    if default:
        L.append(f"module_version({q(name + '/' + default)}, \"default\")")
    L += [f"hide_version({q(name + '/' + v)})" for v in hidden]
    return "\n".join(L) + "\n"
