"""`conda activate` / `conda deactivate`: shell code for the `conda` function to eval.

An activation is the target's plan (envs.py: the modulefile's own ``env_plan`` for base and
clones, ``layer_plan`` for a venv) applied by ``apply_plan`` (a clone takes the place of base's
own bin folders on PATH; a layer sits on top of them), then conda's variables:
``CONDA_PREFIX``, ``CONDA_DEFAULT_ENV``, ``CONDA_SHLVL`` (one more per level; the old prefix
goes to ``CONDA_PREFIX_<old level>``), ``CONDA_PROMPT_MODIFIER`` ``(NAME) ``. As in conda, a
new level takes the previous one's changes away first (its PATH entries, its VIRTUAL_ENV, a
clone's PYTHONUSERBASE), unless ``--stack``; its conda variables stay, for deactivate.
Activating the environment already on top changes nothing (conda's reactivate). On a conda
stack the module itself already says CONDA_PREFIX=stack, CONDA_SHLVL=1: activating base there
is a level of its own, but the level number stays, as conda keeps it for the env it is in.

The code is what shellenv.diff_code writes for the difference (the one quoting rule), plus
the prompt: bash gets ``${CONDA_PROMPT_MODIFIER-}`` once in front of PS1 (the prompt then
follows the variable, so even `module unload` with an environment still active leaves the
prompt as it was), zsh and sh get conda's own literal prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sitestack.core.templates import sh_quote
from sitestack.errors import UsageError
from sitestack.site.modulefiles.content import (
    FRONT_DOOR_STATE,
    apply_plan,
    define_function,
    front_door_function,
    path_join,
)
from sitestack.user.condafront import DIALECTS
from sitestack.user.condafront.envs import Target, home, loaded_stack, remember, resolve
from sitestack.user.condafront.state import Level, State, changed, read_state, record, undo
from sitestack.user.shellenv import diff_code

PROMPT_MARK = "${CONDA_PROMPT_MODIFIER-}"
MAX_SHLVL = 999


@dataclass(frozen=True)
class ShellChange:
    code: str  # for the function to eval
    target: str | None  # the environment now active (its prefix), None after the last deactivate


def shell_of(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise UsageError(f"unknown shell {dialect!r} (shell.bash, shell.zsh or shell.posix)")
    return DIALECTS[dialect]


def _shlvl(env: Mapping[str, str]) -> int:
    raw = env.get("CONDA_SHLVL", "").strip() or "0"
    if not raw.isdigit() or int(raw) > MAX_SHLVL:
        raise UsageError(f"$CONDA_SHLVL={raw!r} is not a level number; the shell was left as it was",
                         hint="unset CONDA_SHLVL, or start a new shell")
    return int(raw)


def activated(env: Mapping[str, str], target: Target, *, stack: bool = False) -> tuple[dict[str, str], Level]:
    """`env` with `target` active on top of whatever is (without the state variables)."""
    st = read_state(env)
    work = dict(env)
    if st.top is not None and not stack:
        # conda replaces the environment it is in: its changes go, its conda variables stay.
        work = undo(work, Level(st.top.prefix, st.top.name, st.top.kind,
                                {k: v for k, v in st.top.old.items() if not k.startswith("CONDA_")},
                                {k: v for k, v in st.top.new.items() if not k.startswith("CONDA_")}))
    base = loaded_stack(env)
    if target.kind == "clone" and not stack and base is not None:
        # A clone is a whole environment: it replaces base on PATH, as conda's activate replaces
        # the environment it leaves (the module's other entries, the site's sitestack, stay).
        drop = {path_join(str(base.prefix), "bin"), path_join(str(base.user_base(home(env))), "bin")}
        work["PATH"] = ":".join(p for p in work.get("PATH", "").split(":") if p not in drop)
    work = apply_plan(work, list(target.plan))
    shlvl = _shlvl(env)
    prefix = str(target.prefix)
    if not (env.get("CONDA_PREFIX") == prefix and shlvl > 0):
        if shlvl > 0 and env.get("CONDA_PREFIX"):
            work[f"CONDA_PREFIX_{shlvl}"] = env["CONDA_PREFIX"]
        shlvl += 1
        if stack:
            work[f"CONDA_STACKED_{shlvl}"] = "true"
    work.update(CONDA_PREFIX=prefix, CONDA_DEFAULT_ENV=target.name, CONDA_SHLVL=str(shlvl),
                CONDA_PROMPT_MODIFIER=f"({target.name}) ")
    old, new = changed(env, work)
    return work, Level(prefix, target.name, target.kind, old, new)


def activate(env: Mapping[str, str], arg: str | None, dialect: str, *, stack: bool = False) -> ShellChange:
    """The code `conda activate [ARG]` evals. Nothing is changed when anything is wrong."""
    shell = shell_of(dialect)
    st = read_state(env)
    _shlvl(env)
    target = resolve(arg, env)
    if st.top is not None and st.top.prefix == str(target.prefix):
        return ShellChange("hash -r 2>/dev/null || true\n", st.top.prefix)
    work, level = activated(env, target, stack=stack)
    loaded = loaded_stack(env)
    after = record(work, State(st.stack or (loaded.ref if loaded else ""), (*st.levels, level)))
    if target.kind != "base":
        remember(env, target.prefix)  # conda env list shows it from now on
    return ShellChange(_code(env, after, shell, dialect), str(target.prefix))


def deactivate(env: Mapping[str, str], dialect: str) -> ShellChange:
    """The code `conda deactivate` evals: the top level undone (nothing when there is none,
    as conda does at level 0; what `module load` gave stays until `module unload`)."""
    shell = shell_of(dialect)
    st = read_state(env)
    if st.top is None:
        return ShellChange("", env.get("CONDA_PREFIX"))
    work = undo(env, st.top)
    rest = State(st.stack, st.levels[:-1])
    after = record(work, rest)
    return ShellChange(_code(env, after, shell, dialect), rest.top.prefix if rest.top else None)


def _code(before: Mapping[str, str], after: Mapping[str, str], shell: str, dialect: str) -> str:
    b = {k: v for k, v in before.items() if k != "PS1"}
    a = {k: v for k, v in after.items() if k != "PS1"}
    code = diff_code(b, a, shell)
    ps1 = _prompt(before, after, dialect)
    if ps1 is not None:
        # Only a shell that has a prompt gets one changed (a job script has none).
        code += f'if [ -n "${{PS1+x}}" ]; then PS1={sh_quote(ps1)}; fi;\n'
    return code + "hash -r 2>/dev/null || true;\n"


def _prompt(before: Mapping[str, str], after: Mapping[str, str], dialect: str) -> str | None:
    ps1 = before.get("PS1")
    if ps1 is None or before.get("CONDA_CHANGEPS1", "").lower() in ("false", "no", "0", "off"):
        return None
    active = FRONT_DOOR_STATE in after
    if dialect == "bash":
        if active and not ps1.startswith(PROMPT_MARK):
            return PROMPT_MARK + ps1
        if not active and ps1.startswith(PROMPT_MARK):
            return ps1[len(PROMPT_MARK):]
        return None
    old, new = before.get("CONDA_PROMPT_MODIFIER") or "", after.get("CONDA_PROMPT_MODIFIER") or ""
    if old == new:
        return None
    return new + (ps1[len(old):] if old and ps1.startswith(old) else ps1)


def hook(dialect: str, conda_exe: str) -> str:
    """`eval "$(conda shell.bash hook)"`: the same `conda` function the modulefile defines."""
    shell_of(dialect)
    return define_function("conda", front_door_function(conda_exe))


def run_env(env: Mapping[str, str], prefix: str | None, name: str | None) -> dict[str, str]:
    """The environment `conda run` starts its command in: `env` with the environment active
    (-p / -n, else the active one, else base)."""
    from sitestack.user.condafront.install import target_of

    t = target_of(env, prefix, name)
    st = read_state(env)
    if st.top is not None and st.top.prefix == str(t.prefix):
        return dict(env)
    return activated(env, t)[0]
