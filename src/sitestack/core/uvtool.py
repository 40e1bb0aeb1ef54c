"""Locate and run uv, the installer every stack and layer is built with."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.log import LogSink
from sitestack.errors import BuildError, ToolMissingError

if TYPE_CHECKING:
    from sitestack.core.records import UserPolicy


def uv_bin() -> str:
    """uv from the `uv` wheel (beside our interpreter), then PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    cand = Path(sys.executable).parent / "uv"
    if cand.exists():
        return str(cand)
    found = shutil.which("uv")
    if not found:
        raise ToolMissingError("uv is not installed (pip install uv)")
    return found


def uv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for uv: never download Pythons, never touch a user's venv."""
    # SOURCE_DATE_EPOCH would make uv's --compile-bytecode write checked-hash .pyc, and
    # PYTHONPYCACHEPREFIX would put them elsewhere (see core.bytecode).
    drop = ("VIRTUAL_ENV", "CONDA_PREFIX", "SOURCE_DATE_EPOCH", "PYTHONPYCACHEPREFIX")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.setdefault("UV_NO_PROGRESS", "1")
    if extra:
        env.update(extra)
    return env


def index_args(
    find_links: tuple[str, ...] | list[str] = (),
    index_url: str | None = None,
    extra_index_url: tuple[str, ...] | list[str] = (),
    no_index: bool = False,
) -> list[str]:
    args: list[str] = []
    for fl in find_links:
        args += ["--find-links", fl]
    if index_url:
        args += ["--index-url", index_url]
    for u in extra_index_url:
        args += ["--extra-index-url", u]
    if no_index:
        args.append("--no-index")
    return args


def policy_args(policy: UserPolicy) -> list[str]:
    """uv's index options for a stack's [user] policy (its constraints go in a file: -c)."""
    args = index_args(policy.find_links, policy.index_url, policy.extra_index_url, policy.no_index)
    for n in policy.only_binary:
        args += ["--only-binary", n]
    return args


def uv_reason(text: str) -> str:
    """uv's explanation without its progress noise."""
    skip = ("Resolved", "Prepared", "Installed", "Using")
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(skip)]
    return "\n".join("  " + ln for ln in lines[-15:])


# "error:", "CMake Error", "Could NOT find X"; not "-Werror" (no word start before "error").
_ERROR_LINE = re.compile(r"\berrors?\b|\bfatal\b|\bnot found\b|could not find", re.IGNORECASE)


def output_tail(text: str, lines: int = 25, *, earlier: int = 10) -> str:
    """The last lines of a failed source build, after the error lines above them.

    A compiler's error is usually in the tail, but a CMake or setup.py failure ends in a
    Python traceback that pushes it out (horovod's "Could NOT find Pytorch" sits ~40 lines
    up); the last `earlier` lines that look like errors are shown first.
    """
    kept = [ln for ln in text.rstrip().splitlines() if ln.strip()]
    tail = kept[-lines:]
    above = [ln for ln in kept[:-lines] if _ERROR_LINE.search(ln)][-earlier:] if len(kept) > lines else []
    shown = [*above, "..."] if above else []
    return "\n".join("  " + ln for ln in [*shown, *tail])


def run_logged(cmd: list[str], log: LogSink, what: str, *, env: dict[str, str] | None = None,
               stdin: str | None = None, tail: int | None = None, umask: int = -1) -> str:
    """Run a uv (or other) command into the build log; BuildError with uv's reason on failure.

    `tail` shows that many last lines of the output unfiltered instead (a compiler's error
    sits among lines that uv_reason would drop as noise). `umask` is the child's (-1: ours).
    A full disk is an OSError (ENOSPC/EDQUOT), as when sitestack itself hits it, so that it
    reads "disk full" and exits 5 whichever process wrote first.
    """
    log.add("$ " + " ".join(cmd))
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, umask=umask)
    log.add(r.stdout + r.stderr)
    if r.returncode != 0:
        text = r.stderr or r.stdout
        for needle, code in (("No space left on device", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT)):
            if needle in text:
                line = next(ln.strip() for ln in reversed(text.splitlines()) if needle in ln)
                raise OSError(code, f"{what} failed: {line}")
        reason = output_tail(text, tail) if tail else uv_reason(text)
        raise BuildError(f"{what} failed:\n{reason}")
    return r.stdout
