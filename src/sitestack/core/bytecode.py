"""Compile .py files to bytecode with a given interpreter, all cores at once."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from sitestack.core.log import LogSink
from sitestack.errors import BuildError


def compile_dirs(python: str, dirs: Sequence[str], log: LogSink, *, strip: str | None = None,
                 prepend: str | None = None) -> None:
    """`compileall -j 0` over `dirs`; `strip`/`prepend` rewrite the recorded source paths.

    Timestamp-checked .pyc (not hash-based): SOURCE_DATE_EPOCH would switch compileall to
    checked hashes, so it is dropped, as is a PYTHONPYCACHEPREFIX that would put the
    bytecode elsewhere.
    """
    dirs = [d for d in dirs if os.path.isdir(d)]
    if not dirs:
        return
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONPYCACHEPREFIX")}
    env["PYTHONNOUSERSITE"] = "1"
    cmd = [python, "-E", "-s", "-m", "compileall", "-q", "-j", "0"]
    if strip and prepend:
        cmd += ["-s", strip, "-p", prepend]
    r = subprocess.run([*cmd, *dirs], capture_output=True, text=True, env=env)
    log.add(r.stdout + r.stderr)
    # compileall exits 1 when any file fails (e.g. templates with py2 syntax): keep going,
    # but fail if it crashed outright.
    if r.returncode not in (0, 1):
        raise BuildError(f"compiling bytecode failed: {r.stderr.strip()[-500:]}")
