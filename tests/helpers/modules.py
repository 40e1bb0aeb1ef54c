"""Run bash scripts under a REAL module system (Lmod or Tcl Environment Modules).

Nothing here is mocked: each call starts ``bash --noprofile --norc -c SCRIPT`` from a small,
clean environment that this module builds (so no login profile such as
``/etc/profile.d/lmod.sh``, no ``BASH_ENV`` and nothing from the pytest process leaks in), runs
the module system's own init code, then the caller's script.

Module systems
--------------
``"lmod"``  Debian's Lmod (``/usr/share/lmod/lmod/init/bash``).
``"tcl"``   Environment Modules 5.x, a private copy unpacked by ``scripts/install-test-deps.sh``
            into ``$SITESTACK_TEST_ENVMODULES`` (default ``/opt/sitestack-test/envmodules``),
            initialised with ``eval "$(tclsh8.6 DIR/usr/lib/<multiarch>/modulecmd.tcl bash
            autoinit)"``. Its MODULEPATH starts empty.

Lmod quirk worth knowing: unless ``LMOD_DUPLICATE_PATHS=yes``, Lmod never keeps duplicate
entries in path variables. ``prepend_path("PATH", d)`` when ``d`` is already in ``PATH`` *moves*
``d`` to the front, and ``module unload`` then removes it from the front only: the old position
is lost and PATH is NOT restored exactly. With ``LMOD_DUPLICATE_PATHS=yes`` it is. The harness
leaves ``LMOD_DUPLICATE_PATHS`` unset (Lmod's default) unless the caller passes it in ``env``.
Environment Modules instead keeps the existing entry where it is, counts a reference in
``__MODULES_SHARE_<VAR>`` and restores PATH exactly on unload.

Environment snapshots
---------------------
Put :func:`env_snapshot_script` in a script as often as needed, then :func:`parse_snapshots`
the stdout::

    snap = env_snapshot_script()
    r = run_module_script("lmod", f"{snap}\\nmodule use {mp}\\nmodule load foo\\n{snap}\\n"
                                  f"module unload foo\\n{snap}")
    before, loaded, after = (strip_module_internals(s) for s in parse_snapshots(r.stdout))
    assert after == before
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.helpers.users import BASE_PATH, setpriv_argv, user_env

MODULE_SYSTEMS: tuple[str, ...] = ("lmod", "tcl")


LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")
LMOD_CMD = Path("/usr/share/lmod/lmod/libexec/lmod")
ENVMODULES_DIR = Path(os.environ.get("SITESTACK_TEST_ENVMODULES", "/opt/sitestack-test/envmodules"))
TCLSH = "tclsh8.6"

_SNAP_BEGIN = "@@SITESTACK-ENV-BEGIN@@"
_SNAP_END = "@@SITESTACK-ENV-END@@"


def _check_system(system: str) -> None:
    if system not in MODULE_SYSTEMS:
        raise ValueError(f"unknown module system {system!r}; expected one of {MODULE_SYSTEMS}")


def tcl_modulecmd() -> Path | None:
    """The private copy's ``modulecmd.tcl`` (``DIR/usr/lib/<multiarch>/modulecmd.tcl``), or None."""
    hits = sorted(ENVMODULES_DIR.glob("usr/lib/*/modulecmd.tcl"))
    return hits[0] if hits else None


def _tclsh_found() -> bool:
    return any(os.access(os.path.join(d, TCLSH), os.X_OK) for d in BASE_PATH.split(":"))


def available(system: str) -> bool:
    """True when *system* ("lmod" or "tcl") is installed where the harness looks for it."""
    _check_system(system)
    if system == "lmod":
        return LMOD_INIT.is_file() and LMOD_CMD.is_file()
    return tcl_modulecmd() is not None and _tclsh_found()


def require(system: str) -> None:
    """``pytest.skip`` unless *system* is available (run scripts/install-test-deps.sh)."""
    if not available(system):
        pytest.skip(f"module system {system!r} not installed; run scripts/install-test-deps.sh")


def init_snippet(system: str) -> str:
    """The bash code that defines the ``module`` command for *system*."""
    _check_system(system)
    if system == "lmod":
        return f"source {shlex.quote(str(LMOD_INIT))}"
    cmd = tcl_modulecmd()
    if cmd is None:
        raise FileNotFoundError(
            f"no modulecmd.tcl under {ENVMODULES_DIR}; run scripts/install-test-deps.sh"
        )
    return f'eval "$({TCLSH} {shlex.quote(str(cmd))} bash autoinit)"'


def clean_env(
    env: Mapping[str, str | None] | None = None, *, user: str | None = None
) -> dict[str, str]:
    """The environment scripts start from.

    PATH=BASE_PATH, HOME/USER/LOGNAME of *user* (default: the current user), LANG=C.UTF-8,
    then *env* on top (a value of None removes that variable). Nothing else: no
    LMOD_DUPLICATE_PATHS, no BASH_ENV, no MODULEPATH.
    """
    name = user if user is not None else pwd.getpwuid(os.getuid()).pw_name
    return user_env(name, env)


def run_module_script(
    system: str,
    script: str,
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    user: str | None = None,
    timeout: float = 120,
    errexit: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run *script* in ``bash --noprofile --norc -c`` after *system*'s init snippet.

    The environment is :func:`clean_env` (*env* on top). With *errexit* the script runs under
    ``set -e`` (set after the init snippet, which is not errexit-clean everywhere). *user*
    runs it as that (unprivileged) user via ``setpriv`` (see tests/helpers/users.py); *cwd*
    defaults to that user's home then. The result is never checked: look at ``returncode``.
    stdout/stderr are text (UTF-8, undecodable bytes kept as surrogate escapes).
    """
    require(system)
    body = f"{init_snippet(system)}\n"
    if errexit:
        body += "set -e\n"
    body += script
    argv = ["bash", "--noprofile", "--norc", "-c", body]
    full_env = clean_env(env, user=user)
    if user is not None:
        argv = setpriv_argv(user, argv)
        if cwd is None:
            cwd = full_env["HOME"]
    return subprocess.run(
        argv,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="surrogateescape",
        check=False,
    )


def env_snapshot_script() -> str:
    """Bash code that prints the exported environment (``env -0``) between NUL-framed markers."""
    return f"printf '\\0{_SNAP_BEGIN}\\0'; env -0; printf '{_SNAP_END}\\0'"


def parse_snapshots(stdout: str) -> list[dict[str, str]]:
    """Every environment printed by :func:`env_snapshot_script` in *stdout*, in order.

    Other output on stdout is ignored, as long as it does not itself contain NUL bytes.
    """
    items = stdout.split("\0")
    snaps: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for item in items:
        if item == _SNAP_BEGIN:
            if current is not None:
                raise ValueError("snapshot begin marker inside a snapshot")
            current = {}
        elif item == _SNAP_END:
            if current is None:
                raise ValueError("snapshot end marker without a begin marker")
            snaps.append(current)
            current = None
        elif current is not None:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"malformed environment entry {item!r}")
            current[name] = value
    if current is not None:
        raise ValueError("unterminated snapshot (did the script fail in the middle of one?)")
    return snaps


# Variables the module systems keep for their own bookkeeping. Each is ignored for a reason:
_INTERNAL_NAMES = frozenset(
    {
        # Both systems: the list of loaded modules and their files. They ARE the module
        # system's state. Environment Modules also leaves ``LOADEDMODULES=`` set-but-empty
        # after autoinit and unsets it after the last unload, so "before" and "after" differ.
        "LOADEDMODULES",
        "_LMFILES_",
        # Lmod: number of base64 chunks of its serialized module table (see below).
        "_ModuleTable_Sz_",
    }
)
_INTERNAL_PATTERNS = (
    # Lmod: base64 chunks of its serialized state (Lua table). Rewritten on every command,
    # and Lmod leaves stale chunks (e.g. _ModuleTable002_) behind when the table shrinks.
    re.compile(r"_ModuleTable\d+_"),
    # Lmod: per-entry reference counts of path variables. Lmod leaves
    # __LMOD_REF_COUNT_PATH behind after the last unload, though PATH itself is restored.
    re.compile(r"__LMOD_REF_COUNT_.+"),
    # Lmod: pushenv() stacks and priority path bookkeeping.
    re.compile(r"__LMOD_STACK_.+"),
    re.compile(r"__LMOD_Priority_.+"),
    # Environment Modules 5.x: all of its state lives in __MODULES_* (LMALTNAME, LMCONFLICT,
    # LMPREREQ, LMTAG, LMINIT, SHARE_<VAR> ref counts, PUSHENV_<VAR> stacks, ...).
    re.compile(r"__MODULES_.+"),
    # Environment Modules 4.x names of the same state (MODULES_LMALTNAME, ...) and its
    # <VAR>_modshare ref counts, should the Debian package ever be an older Modules.
    re.compile(r"MODULES_LM.+"),
    re.compile(r".+_modshare"),
)
# Lmod's ref counts of MODULEPATH itself, which go with MODULEPATH (see strip_module_internals).
_MODULEPATH_NAMES = frozenset({"MODULEPATH", "__LMOD_REF_COUNT_MODULEPATH"})


def is_module_internal(name: str, *, modulepath: bool = True) -> bool:
    """True when :func:`strip_module_internals` drops variable *name*."""
    if name in _INTERNAL_NAMES or (modulepath and name in _MODULEPATH_NAMES):
        return True
    return any(p.fullmatch(name) for p in _INTERNAL_PATTERNS)


def strip_module_internals(d: Mapping[str, str], *, modulepath: bool = True) -> dict[str, str]:
    """A copy of environment *d* without the module systems' own bookkeeping variables.

    Everything a modulefile sets on purpose stays, including PATH, MANPATH and the
    ``LMOD_FAMILY_*`` / ``MODULES_FAMILY_*`` variables that ``family()`` sets. MODULEPATH is
    dropped too when *modulepath* is true (the default), for comparisons across a ``module
    use``; pass ``modulepath=False`` to compare it as well.
    """
    return {k: v for k, v in d.items() if not is_module_internal(k, modulepath=modulepath)}


def env_diff(
    before: Mapping[str, str], after: Mapping[str, str]
) -> dict[str, tuple[str | None, str | None]]:
    """``{name: (old, new)}`` for every variable that differs (None: unset)."""
    names = set(before) | set(after)
    return {
        n: (before.get(n), after.get(n))
        for n in sorted(names)
        if before.get(n) != after.get(n)
    }
