"""The one bytecode compiler: `compileall` run by the tree's own interpreter.

Build, the package cache, clone and stage all compile through ``compile_paths``: the
interpreter that will import the files writes their bytecode (right magic number and
cache tag, whatever Python runs sitestack), and ``strip``/``prepend`` record the final
path in the .pyc although the files sit in a temp folder.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from sitestack.core.log import LogSink
from sitestack.errors import BuildError


def compile_paths(python: str, paths: Sequence[str], *, strip: str | None = None,
                  prepend: str | None = None, force: bool = False,
                  exclude: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m compileall` over files and folders (folders on all cores); never raises
    for compile errors: compileall exits 1 when a file fails, 0 when all compiled.

    Timestamp-checked .pyc (not hash-based): SOURCE_DATE_EPOCH would switch compileall to
    checked hashes, so it is dropped, as is a PYTHONPYCACHEPREFIX that would put the
    bytecode elsewhere. `exclude` is compileall's -x regex: files it matches are not even
    checked (the build skips site-packages that came compiled from the package cache).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONPYCACHEPREFIX")}
    env["PYTHONNOUSERSITE"] = "1"
    cmd = [python, "-E", "-s", "-m", "compileall", "-q", "-j", "0"]
    if force:
        cmd.append("-f")
    if strip and prepend:
        cmd += ["-s", strip, "-p", prepend]
    if exclude:
        cmd += ["-x", exclude]
    return subprocess.run([*cmd, *paths], capture_output=True, text=True, env=env)


def compile_dirs(python: str, dirs: Sequence[str], log: LogSink, *, strip: str | None = None,
                 prepend: str | None = None, exclude: str | None = None) -> None:
    """Compile every .py under `dirs` (those that exist); BuildError if compileall crashed."""
    dirs = [d for d in dirs if os.path.isdir(d)]
    if not dirs:
        return
    r = compile_paths(python, dirs, strip=strip, prepend=prepend, exclude=exclude)
    log.add(r.stdout + r.stderr)
    # compileall exits 1 when any file fails (e.g. templates with py2 syntax): keep going,
    # but fail if it crashed outright.
    if r.returncode not in (0, 1):
        raise BuildError(f"compiling bytecode failed: {r.stderr.strip()[-500:]}")


def pyc_paths(rel: str, py_xy: str) -> tuple[str, ...]:
    """The bytecode files CPython X.Y writes for the source `rel` (plain, -O, -OO)."""
    d, name = os.path.split(rel)
    base = os.path.join(d, "__pycache__", f"{name[:-3]}.cpython-{py_xy.replace('.', '')}")
    return (f"{base}.pyc", f"{base}.opt-1.pyc", f"{base}.opt-2.pyc")
