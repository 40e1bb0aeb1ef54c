"""Shared helpers for the benchmarks: timing, clean environments, printing ratios."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    """The machine's environment without pip/uv/Python settings that would skew a run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def timed(cmd: Sequence[str] | str, *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
          shell: bool = False, output: list[str] | None = None) -> float:
    """Seconds `cmd` took (it must succeed); its stdout and stderr are appended to `output`."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env or clean_env(), cwd=cwd, shell=shell, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"benchmark step failed: {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    if output is not None:
        output += [r.stdout, r.stderr]
    return took


def median_of(n: int, cmd: Sequence[str] | str, **kw: object) -> float:
    return statistics.median(timed(cmd, **kw) for _ in range(n))  # type: ignore[arg-type]


def report(title: str, rows: list[tuple[str, float]], base: str) -> None:
    ref = dict(rows)[base]
    print(f"\n{title}")
    width = max(len(n) for n, _ in rows)
    for name, secs in rows:
        print(f"  {name:<{width}}  {secs:8.3f} s   {secs / ref:6.2f}x {base}")


REPO = Path(__file__).resolve().parents[1]


def tool_venv(where: Path, uv: str = "uv", python: str = sys.executable) -> Path:
    """sitestack installed from this checkout into its own venv, not editable: how users run
    it (`uv tool install`, pipx). A benchmark that starts `python -m sitestack` from a busy
    interpreter would time that interpreter's site-packages too: its .pth files (on this
    machine one imports certifi at every start), the editable install's finder."""
    # --clear: a rerun with the same --work replaces the last run's tool venv (uv refuses otherwise)
    subprocess.run([uv, "venv", "-q", "--clear", "--python", python, str(where)], check=True, env=clean_env())
    subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(where / "bin" / "python"),
                    str(REPO)], check=True, env=clean_env())
    return where


def bench_site(given: str | None, tmp: Path, requirements: Sequence[str] = ()) -> Path:
    """The site root to time against: `given` (--root) as it is, or a new one under `tmp`
    holding bench/1, this interpreter with `requirements`, built in this process."""
    if given:
        return Path(given)
    from sitestack.build.stack import BuildLog, build
    from sitestack.core.layout import SiteRoot
    from sitestack.site.spec import parse_spec

    root = tmp / "site"
    reqs = ", ".join(f'"{r}"' for r in requirements)
    spec = parse_spec(f'[stack]\nname = "bench"\npython = "{sys.executable}"\nsite = "bench"\n'
                      f"[packages]\nrequirements = [{reqs}]\n")
    build(spec, SiteRoot(root), version="1", log=BuildLog(echo=False))
    return root
