"""Environment Modules modulefiles (Tcl)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sitestack.core.templates import tcl_quote

if TYPE_CHECKING:
    from sitestack.site.modulefiles.content import ModuleContent


# One quoting rule per language, shared with the templates (core.templates).
q = tcl_quote


def modulefile(c: ModuleContent, header: str) -> str:
    L = ["#%Module1.0", f"# {header}", "proc ModulesHelp { } {", f"    puts stderr {q(c.help_text)}", "}"]
    L += [f"module-whatis {q(w)}" for w in c.whatis]
    if c.extensions:
        # A no-op in Environment Modules 5.x (kept for Lmod reading this tree); see modulefiles.md.
        L.append("extensions " + " ".join(q(e) for e in c.extensions))
    if c.family:
        L.append(f"family {q(c.family)}")
    L += [f"depends-on {q(d)}" for d in c.depends_on]
    L += [
        f"set prefix {q(c.prefix)}",
        "set home [getenv HOME]",
        f"set userbase [file join $home {' '.join(q(p) for p in c.user_base_parts)}]",
        'prepend-path PATH [file join $prefix bin]',
        "pushenv PYTHONUSERBASE $userbase",
        'prepend-path PATH [file join $userbase bin]',
    ]
    if c.clone:
        L.append("pushenv SITESTACK_CLONE $prefix")
        L += ["pushenv CONDA_PREFIX $prefix"] if c.conda else []
    else:
        L += [
            f"pushenv SITESTACK_STACK {q(c.name + '/' + c.version)}",
            "pushenv SITESTACK_PREFIX $prefix",
            f"pushenv SITESTACK_STACK_ROOT {q(c.root)}",
        ]
    if c.conda and not c.clone:
        L += [
            "pushenv CONDA_PREFIX $prefix",
            f"pushenv CONDA_DEFAULT_ENV {q(c.name + '/' + c.version)}",
            "pushenv CONDA_SHLVL 1",
            'pushenv CONDA_PROMPT_MODIFIER ""',
        ]
    L += [f"pushenv {q(k)} {q(v)}" for k, v in c.setenv]
    L += [f"prepend-path {q(k)} {q(v)}" for k, v in c.prepend_path]
    if c.deprecated:
        msg = f"{c.name}/{c.version} is deprecated: {c.deprecated}"
        L += ["if {[module-info mode load]} {", f"    puts stderr {q(msg)}", "}"]
    return "\n".join(L) + "\n"


def modulerc(name: str, default: str | None, hidden: list[str], header: str) -> str:
    L = ["#%Module1.0", f"# {header}"]
    if default:
        L.append(f"module-version {q(name + '/' + default)} default")
    L += [f"module-hide {q(name + '/' + v)}" for v in hidden]
    return "\n".join(L) + "\n"
