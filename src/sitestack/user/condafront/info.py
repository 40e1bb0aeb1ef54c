"""`conda list`, `conda env list` / `conda info --envs`, `conda info`: what there is, read only."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sitestack.core.records import StackRecord
from sitestack.user.condafront.envs import (
    Target,
    at_path,
    envs_dirs,
    known_environments,
    loaded_stack,
)
from sitestack.user.condafront.install import describe, source_of, target_of
from sitestack.user.condafront.state import read_state


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    build: str
    channel: str  # conda's channel column: a channel, "pypi", or "pypi (stack)" in a layer


@dataclass(frozen=True)
class Listing:
    prefix: Path
    packages: tuple[Package, ...]


@dataclass(frozen=True)
class EnvRow:
    name: str  # "base", a name, or "" (conda prints only the path then)
    prefix: Path
    active: bool
    kind: str


@dataclass(frozen=True)
class Info:
    active: str | None  # CONDA_DEFAULT_ENV of the active environment
    active_prefix: str | None
    shlvl: str
    stack: str | None
    stack_prefix: str | None
    python: str | None
    sources: str
    envs_dirs: tuple[str, ...]
    user_base: str | None


def _pypi(sp: Path, channel: str) -> list[Package]:
    from sitestack.core.dists import site_dists

    return [Package(n, v, "pypi_0", channel) for n, v in site_dists(sp).values()]


def _conda(prefix: Path) -> list[Package]:
    out = []
    for p in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and all(isinstance(d.get(k), str) for k in ("name", "version", "build")):
            ch = d.get("channel") if isinstance(d.get("channel"), str) else ""
            out.append(Package(d["name"], d["version"], d["build"], str(ch).rstrip("/").rsplit("/", 1)[-1]))
    return out


def listing(env: Mapping[str, str], prefix: str | None = None, name: str | None = None) -> Listing:
    """The packages of the active environment (or -p / -n), as `conda list` shows them."""
    t = target_of(env, prefix, name)
    sp = t.prefix / "lib" / t.python.name / "site-packages" if t.kind != "layer" else None
    pkgs: list[Package] = []
    if t.kind == "layer":
        from sitestack.user.layer import open_layer

        lay = open_layer(t.prefix)
        pkgs = _pypi(lay.site_packages, "pypi")
        if lay.inherit and t.stack is not None:
            own = {p.name.lower() for p in pkgs}
            pkgs += [p for p in _pypi(t.stack.site_packages, "pypi (stack)") if p.name.lower() not in own]
    else:
        assert sp is not None
        conda = _conda(t.prefix)
        seen = {p.name.lower().replace("_", "-") for p in conda}
        pkgs = conda + [p for p in _pypi(sp, "pypi") if p.name.lower().replace("_", "-") not in seen]
    return Listing(t.prefix, tuple(sorted(pkgs, key=lambda p: p.name.lower())))


def environments(env: Mapping[str, str]) -> list[EnvRow]:
    """base, the clones and layers in the envs folders, and those the front door made or
    activated (~/.conda/environments.txt) that are still there."""
    rec = loaded_stack(env)
    top = read_state(env).top
    active = top.prefix if top is not None else (str(rec.prefix) if rec is not None else None)
    rows: list[EnvRow] = []
    if rec is not None:
        rows.append(EnvRow("base", rec.prefix, active == str(rec.prefix), "base"))
    dirs = envs_dirs(env, rec)
    candidates = [p for d in dirs if d.is_dir() for p in sorted(d.iterdir()) if p.is_dir()]
    for p in dict.fromkeys([*candidates, *known_environments(env)]):
        t = _quiet(p, env, rec)
        if t is None or t.kind == "base":
            continue
        rows.append(EnvRow(t.prefix.name if t.prefix.parent in dirs else "", t.prefix,
                           active == str(t.prefix), t.kind))
    return rows


def _quiet(p: Path, env: Mapping[str, str], rec: StackRecord | None) -> Target | None:
    from sitestack.errors import SitestackError

    try:
        return at_path(p, env, rec)
    except SitestackError:
        return None  # gone, or not an environment (any more): not listed


def info(env: Mapping[str, str]) -> Info:
    rec = loaded_stack(env)
    top = read_state(env).top
    sources = "no stack loaded"
    if rec is not None:
        kind, channels = ("conda", list((rec.extra.get("conda") or {}).get("channels", []))) \
            if rec.kind == "conda" else ("pypi", [])
        sources = (f"conda channels {', '.join(map(str, channels))}, then the Python package index "
                   f"({describe(rec.user)})" if kind == "conda" else
                   f"the Python package index the site configured ({describe(rec.user)})")
    if top is not None:
        t = _quiet(Path(top.prefix), env, rec)
        if t is not None and source_of(t)[0] == "conda":
            sources = f"conda channels {', '.join(source_of(t)[1])}"
    return Info(
        active=top.name if top is not None else None,
        active_prefix=top.prefix if top is not None else None,
        shlvl=env.get("CONDA_SHLVL", "0"), stack=rec.ref if rec is not None else None,
        stack_prefix=str(rec.prefix) if rec is not None else None,
        python=rec.python if rec is not None else None, sources=sources,
        envs_dirs=tuple(str(d) for d in envs_dirs(env, rec)), user_base=env.get("PYTHONUSERBASE"))
