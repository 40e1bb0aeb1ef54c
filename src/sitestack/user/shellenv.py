"""`sitestack load` / `unload`: the modulefile's changes as shell code, for machines with no
module system.

The plan comes from the same ``ModuleContent`` the Lmod and Tcl writers render (``content_for``),
in the modulefile's order: the family (``LMOD_FAMILY_<FAMILY>`` and ``..._VERSION``, as Lmod's
``family()`` sets them), the ``depends_on`` modules, prepend ``PREFIX/bin``, set
``PYTHONUSERBASE`` (HOME read now, as the modulefile reads it at load time), prepend its
``bin``, the ``SITESTACK_*`` variables, the conda variables, the spec's ``setenv`` then
``prepend_path``. Path variables behave as in Lmod: an entry already there moves to the front.

A ``depends_on`` module is loaded as Lmod's ``depends_on`` does when it is a stack of this site
(its own plan, first; unload undoes it too); one already in ``LOADEDMODULES`` is left as it is;
any other module (``PrgEnv-gnu``) is a modulefile sitestack cannot run, so it is named on
stderr and the stack is loaded without it.

The modulefile's shell functions (the `conda` front door) are defined too, for bash, zsh
and sh. What load replaced is kept in the exported ``_SITESTACK_SAVED`` (JSON): every touched
variable's old value (or null: it was unset), the value load gave it, the entries it
prepended, and the functions it defined. Unload puts back the old value of every variable
still as load left it; a path variable changed since (the user prepended more) only loses the
entries load added. Loading a second stack first unloads the first, as Lmod's family() swap
does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sitestack import TYPE_CHECKING
from sitestack.core.templates import sh_quote
from sitestack.errors import UsageError
from sitestack.site.modulefiles.content import Op, apply_plan, define_function, front_door_unload

if TYPE_CHECKING:
    from sitestack.site.registry import Site

SAVED = "_SITESTACK_SAVED"
SHELLS = ("bash", "zsh", "sh", "fish")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ShellCode:
    code: str  # eval this
    ref: str | None  # the stack now loaded (None after unload)
    messages: tuple[str, ...] = ()  # for stderr: deprecation, modules it cannot load


def _saved(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The one reader of $_SITESTACK_SAVED: exactly the shape load_env writes, else one
    UsageError line (exit 2) before any shell code is printed, so the shell is left alone.
    {"stack": str, "old": {VAR: str | null}, "new": {VAR: str | null}, "added": {VAR: [str]},
    "functions": [NAME]}."""
    from sitestack.core.shape import Shape

    raw = env.get(SAVED)
    if raw is None:
        return None
    shape = Shape(f"${SAVED} is not what `sitestack load` wrote, so its changes cannot be undone", UsageError,
                  hint=f"unset {SAVED}, or start a new shell")
    data = shape.table(shape.json_text(raw))
    shape.text(data.get("stack"), "stack")
    values: dict[str, dict[str, str | None]] = {}
    for key in ("old", "new"):
        values[key] = {var: (None if v is None else shape.text(v, f"{key}.{var}", one_line=False))
                       for var, v in shape.table(data.get(key), key).items()}
    added = {var: shape.texts(v, f"added.{var}", one_line=False)
             for var, v in shape.table(data.get("added", {}), "added").items()}
    funcs = shape.texts(data.get("functions", []), "functions")
    for var in [*values["old"], *values["new"], *added, *funcs]:
        if not _NAME.fullmatch(var):  # unload writes them into shell code unquoted
            shape.fail(f"{var!r} is not a variable or function name a shell can set")
    if any("\0" in v for d in values.values() for v in d.values() if v) or \
            any("\0" in v for vs in added.values() for v in vs):
        shape.fail("a value holds a NUL, which no environment variable can")
    return {"stack": data["stack"], "old": values["old"], "new": values["new"],
            "added": {var: list(v) for var, v in added.items()}, "functions": list(funcs)}


def restored(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the loaded stack's changes undone (unchanged if none is loaded)."""
    data = _saved(env)
    out = dict(env)
    out.pop(SAVED, None)
    if data is None:
        return out
    # What the conda front door added since load goes first, as the modulefile's unload takes it.
    out = front_door_unload(out)
    for var, old in data["old"].items():
        now, added = out.get(var), data["added"].get(var)
        if now != data["new"].get(var) and added and now is not None:
            # Changed since load: drop only what load added, keep the user's own changes.
            parts = now.split(":")
            for entry in added:
                if entry in parts:
                    parts.remove(entry)
            keep = ":".join(parts)
            if keep or old is not None:
                out[var] = keep
            else:
                out.pop(var, None)
        elif old is None:
            out.pop(var, None)
        else:
            out[var] = old
    return out


def _loaded(module: str, env: Mapping[str, str]) -> bool:
    """Whether a module system has `module` (NAME or NAME/VERSION) loaded in `env`."""
    return any(m == module or m.split("/")[0] == module for m in env.get("LOADEDMODULES", "").split(":") if m)


def _plan(site: Site, ref: str, env: Mapping[str, str], messages: list[str]) -> tuple[str, list[Op]]:
    """(the stack's ref, its ops with those of the depends_on stacks it loads first)."""
    from sitestack.site.loadplan import load_plan

    plan = load_plan(site, ref, env.get("HOME", ""), lambda module: _loaded(module, env))
    for kind, stack, text in plan.notes:
        messages.append(f"{stack} is deprecated: {text}" if kind == "deprecated" else
                        f"{stack} needs the modules {text}, which `sitestack load` cannot load: "
                        "load them with your module system first")
    return plan.ref, list(plan.ops)


def load_env(site: Site, ref: str, env: Mapping[str, str]) -> tuple[dict[str, str], str, list[str]]:
    """(the environment after loading `ref`, the stack's ref, messages for stderr)."""
    base = restored(env)
    messages: list[str] = []
    stack, ops = _plan(site, ref, base, messages)
    new = apply_plan(base, ops)
    touched = list(dict.fromkeys(var for _, var, _ in ops))
    added: dict[str, list[str]] = {}
    for kind, var, value in ops:
        if kind == "prepend":
            added.setdefault(var, []).append(value)
    new[SAVED] = json.dumps({"stack": stack, "old": {v: base.get(v) for v in touched},
                             "new": {v: new.get(v) for v in touched}, "added": added,
                             "functions": [name for name, _ in functions(site, stack)]},
                            separators=(",", ":"), ensure_ascii=False)
    return new, stack, messages


def diff_code(before: Mapping[str, str], after: Mapping[str, str], shell: str) -> str:
    """Shell code that turns environment `before` into `after` (exported variables)."""
    if shell not in SHELLS:
        raise UsageError(f"unknown shell {shell!r} (choose from {', '.join(SHELLS)})")
    lines = []
    for var in sorted(set(before) | set(after)):
        if before.get(var) == after.get(var):
            continue
        if not _NAME.fullmatch(var):
            raise UsageError(f"{var!r} is not a variable name a shell can set")
        value = after.get(var)
        if shell == "fish":
            if value is None:
                lines.append(f"set -e {var}")
            elif var.endswith("PATH") and value:
                # fish keeps *PATH variables as lists; one element per entry.
                lines.append(f"set -gx {var} " + " ".join(fish_quote(p) for p in value.split(":")))
            else:
                lines.append(f"set -gx {var} {fish_quote(value)}")
        else:
            lines.append(f"unset {var}" if value is None else f"export {var}={sh_quote(value)}")
    return "".join(line + ";\n" for line in lines)


def fish_quote(s: str) -> str:
    """One fish word: in single quotes fish only treats \\\\ and \\' specially."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load(site: Site, ref: str, env: Mapping[str, str], shell: str = "bash") -> ShellCode:
    """The code `eval "$(sitestack load REF)"` runs."""
    if shell not in SHELLS:
        raise UsageError(f"unknown shell {shell!r} (choose from {', '.join(SHELLS)})")
    new, stack, messages = load_env(site, ref, env)
    # The shell functions the modulefile defines (the `conda` front door); fish has none.
    defined = "" if shell == "fish" else "".join(define_function(*f) for f in functions(site, stack))
    return ShellCode(code=diff_code(env, new, shell) + defined, ref=stack, messages=tuple(messages))


def functions(site: Site, ref: str) -> tuple[tuple[str, str], ...]:
    """(name, body) of each shell function the stack's modulefile defines."""
    from sitestack.site.modulefiles import content_for

    rec = site.get(ref)
    return content_for(rec, site.stack_state(rec.name)).functions


def unload(env: Mapping[str, str], shell: str = "bash") -> ShellCode:
    """The code `eval "$(sitestack unload)"` runs: every variable back as before load."""
    data = _saved(env)
    if data is None:
        raise UsageError("no stack was loaded with `sitestack load` in this shell",
                         hint="a stack loaded by `module load` is unloaded with `module unload`")
    code = diff_code(env, restored(env), shell)
    if shell != "fish":  # names _saved checked: shell names only
        code += "".join(f"unset -f {name} 2>/dev/null || true;\n" for name in data["functions"])
    return ShellCode(code=code, ref=None)
