"""Locate and run uv, the installer every stack and layer is built with."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .errors import ToolMissingError


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
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
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
