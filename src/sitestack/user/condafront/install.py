"""`conda install [-y] PKG...` / `conda remove PKG...` in the active clone or layer.

Where the packages come from is the stack's own source, never another:
- a PyPI stack: the Python package index the site configured (the spec's ``[user]`` policy:
  find-links, index, constraints, only-binary). Into a layer through `sitestack install` (only
  what the stack lacks lands in it, a stack package is never silently shadowed); into a clone
  by uv, for the clone's own python. A conda-style ``numpy=1.26`` means ``numpy==1.26.*``.
- a conda-channel stack: its clone is solved and installed by py-rattler from the channels the
  stack was built from (conda/install.py ``install_into``), conda-meta and its history updated.
  A layer of a conda stack takes PyPI packages only; the refusal says so and what to do.
A channel (``-c``, ``CHANNEL::pkg``) is refused: the site chose them. With base active (or no
environment) the stack itself would be the target: refused as conda refuses an environment it
cannot write (``EnvironmentNotWritableError``), naming the stack and both ways out.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.core.records import StackRecord, UserPolicy
from sitestack.errors import BuildError, ConflictError, UsageError
from sitestack.user.condafront.envs import (
    Target,
    at_path,
    expand,
    loaded_stack,
    need_stack,
    resolve,
)
from sitestack.user.condafront.state import read_state

PYPI_SPEC = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\s*=\s*([^=<>!~\s]+)(?:=(\S+))?|\s+([0-9][^\s=<>!~]*))?")


@dataclass(frozen=True)
class Changed:
    target: Path
    kind: str  # clone | layer
    source: str  # one line: where the packages came from
    added: tuple[str, ...]
    removed: tuple[str, ...]
    layer: Any = None  # the layer's user.install.InstallResult, rendered as `sitestack install` does


def pypi_requirement(spec: str) -> str:
    """A conda spec as a PEP 508 requirement: `numpy=1.26` -> `numpy==1.26.*`."""
    from packaging.requirements import InvalidRequirement, Requirement

    s = spec.strip()
    m = PYPI_SPEC.fullmatch(s)
    if m and (m.group(2) or m.group(4)):
        if m.group(3):
            raise UsageError(f"{spec!r}: a conda build string ({m.group(3)}) means nothing for the Python "
                             "package index; nothing was installed", hint=f"conda install {m.group(1)}={m.group(2)}")
        version = m.group(2) or m.group(4)
        s = f"{m.group(1)}=={version}" if version.endswith("*") else f"{m.group(1)}=={version}.*"
    try:
        Requirement(s)
    except InvalidRequirement:
        raise UsageError(f"{spec!r} is not a package spec; nothing was installed") from None
    return s


def target_of(env: Mapping[str, str], prefix: str | None, name: str | None) -> Target:
    """-p / -n, else the active environment, else base (the loaded stack)."""
    if prefix is not None and name is not None:
        raise UsageError("give --prefix/-p or --name/-n, not both")
    if prefix is not None:
        return at_path(expand(prefix, env), env, loaded_stack(env))
    if name is not None:
        return resolve(name, env)
    top = read_state(env).top
    if top is not None:
        return at_path(Path(top.prefix), env, loaded_stack(env))
    return resolve("base", env)


def read_only(rec: StackRecord) -> ConflictError:
    return ConflictError(
        f"the base environment is the site's stack {rec.ref} ({rec.prefix}), which is read-only; "
        "nothing was changed",
        hint="make an environment of your own and install there: conda create --clone base -p DIR "
             "(then conda activate DIR), or python -m venv --system-site-packages DIR (or sitestack "
             "venv DIR, then source DIR/bin/activate)")


def source_of(t: Target) -> tuple[str, list[str]]:
    """("pypi" | "conda", the conda channels)."""
    if t.kind == "clone" and (t.prefix / "conda-meta").is_dir():
        channels = _channels(t)
        return "conda", channels
    return "pypi", []


def _channels(t: Target) -> list[str]:
    """The channels the stack was built from; from the clone's conda-meta if the stack is gone."""
    conda = t.stack.extra.get("conda") if t.stack is not None else None
    chans = conda.get("channels") if isinstance(conda, dict) else None
    if isinstance(chans, list) and chans and all(isinstance(c, str) and c for c in chans):
        return list(chans)
    import json

    found: list[str] = []
    for p in sorted((t.prefix / "conda-meta").glob("*.json")):
        try:
            ch = json.loads(p.read_text(encoding="utf-8")).get("channel")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(ch, str) and ch and ch not in found:
            found.append(ch)
    if not found:
        raise UsageError(f"{t.prefix}: cannot tell which conda channels its stack was built from")
    return found


def describe(policy: UserPolicy) -> str:
    where = [f"find-links {', '.join(policy.find_links)}"] if policy.find_links else []
    if not policy.no_index:
        where.append(f"index {policy.index_url or 'https://pypi.org/simple'}")
        where += [f"index {u}" for u in policy.extra_index_url]
    return "; ".join(where) or "nowhere (no index, no find-links)"


def change(env: Mapping[str, str], specs: Sequence[str], *, remove: bool = False, channels: Sequence[str] = (),
           prefix: str | None = None, name: str | None = None, command: str = "conda install") -> Changed:
    t = target_of(env, prefix, name)
    if t.kind == "base":
        raise read_only(t.stack or need_stack(env))
    kind, conda_channels = source_of(t)
    pinned = [s for s in specs if "::" in s]
    if channels or pinned:
        said = ", ".join([*channels, *(s.split("::")[0] for s in pinned)])
        comes = (f"the channels its stack was built from ({', '.join(conda_channels)})" if kind == "conda"
                 else "the Python package index the site configured")
        raise UsageError(f"{command}: channel {said} refused: packages for {t.prefix} come from {comes}; "
                         "nothing was changed", hint=f"{command} {' '.join(s.split('::')[-1] for s in specs)}")
    if not specs:
        raise UsageError(f"{command}: name the packages; nothing was changed")
    if kind == "conda":
        return _conda(env, t, specs, conda_channels, remove, command)
    if t.stack is not None and t.stack.kind == "conda" and t.kind == "layer":
        raise UsageError(f"{t.prefix} is a layer (a venv) of the conda stack {t.stack.ref}: it takes packages "
                         "from the Python package index, not conda packages; nothing was changed",
                         hint="pip install PKG (or sitestack install PKG) here, or for conda packages "
                              "conda create --clone base -p DIR")
    policy = t.stack.user if t.stack is not None else UserPolicy()
    source = f"packages come from the Python package index the site configured ({describe(policy)})"
    reqs = [pypi_requirement(s) for s in specs] if not remove else [_name(s) for s in specs]
    if t.kind == "layer":
        return _layer(t, reqs, remove, source)
    return _clone(t, reqs, remove, policy, source)


def _name(spec: str) -> str:
    from packaging.utils import canonicalize_name

    req = pypi_requirement(spec)
    return str(canonicalize_name(re.split(r"[\s=<>!~;\[]", req, maxsplit=1)[0]))


def _conda(env: Mapping[str, str], t: Target, specs: Sequence[str], channels: list[str], remove: bool,
           command: str) -> Changed:
    from sitestack.conda.install import install_into

    cache = expand("~/.conda/pkgs", env)
    added, removed = install_into(t.prefix, channels, [] if remove else list(specs),
                                  list(specs) if remove else [], cache, f"{command} {' '.join(specs)}")
    return Changed(t.prefix, t.kind, f"conda packages come from the channels the stack was built from "
                   f"({', '.join(channels)})", tuple(added), tuple(removed))


def _uv(args: list[str]) -> subprocess.CompletedProcess[str]:
    from sitestack.core.uvtool import uv_bin, uv_env

    return subprocess.run([uv_bin(), *args], capture_output=True, text=True, env=uv_env(), timeout=1800)


def _installed(sp: Path) -> dict[str, str]:
    from sitestack.core.dists import site_dists

    return {k: f"{n} {v}" for k, (n, v) in site_dists(sp).items()}


def _site_packages(t: Target) -> Path:
    return t.prefix / "lib" / t.python.name / "site-packages"


def _clone(t: Target, reqs: list[str], remove: bool, policy: UserPolicy, source: str) -> Changed:
    import tempfile

    from sitestack.core.uvtool import policy_args, uv_reason

    sp = _site_packages(t)
    before = _installed(sp)
    if remove:
        missing = [r for r in reqs if r not in before]
        if missing:
            raise UsageError(f"{', '.join(missing)} is not installed in {t.prefix}; nothing was removed")
        r = _uv(["pip", "uninstall", "--python", str(t.python), *reqs])
    else:
        with tempfile.TemporaryDirectory(prefix="sitestack-conda-") as work:
            cons = Path(work) / "constraints.txt"
            cons.write_text("".join(c + "\n" for c in policy.constraints))
            r = _uv(["pip", "install", "--python", str(t.python), *policy_args(policy), "-c", str(cons), *reqs])
    if r.returncode != 0:
        raise BuildError(f"{'removing' if remove else 'installing'} failed; {t.prefix} is unchanged:\n"
                         f"{uv_reason(r.stderr or r.stdout)}")
    after = _installed(sp)
    return Changed(t.prefix, t.kind, source, tuple(after[k] for k in sorted(set(after) - set(before))),
                   tuple(before[k] for k in sorted(set(before) - set(after))))


def _layer(t: Target, reqs: list[str], remove: bool, source: str) -> Changed:
    if not remove:
        from sitestack.user.install import install

        res = install(str(t.prefix), reqs)
        return Changed(t.prefix, t.kind, source, tuple(f"{i.name} {i.version}" for i in (*res.install, *res.shadow)),
                       tuple(f"{i.name} {i.version}" for i in res.unshadow), layer=res)
    from sitestack.core.uvtool import uv_reason
    from sitestack.user.layer import layer_lock, open_layer
    from sitestack.user.layertx import recover
    from sitestack.user.requested import Requested, read, req_name, write

    lay = open_layer(t.prefix)
    with layer_lock(lay.path):
        recover(lay.path)
        before = _installed(lay.site_packages)
        missing = [r for r in reqs if r not in before]
        if missing:
            stack = _installed(t.stack.site_packages) if t.stack is not None else {}
            why = " (it comes from the stack, which is read-only)" if all(m in stack for m in missing) else ""
            raise UsageError(f"{', '.join(missing)} is not installed in the layer {t.prefix}{why}; "
                             "nothing was removed")
        r = _uv(["pip", "uninstall", "--python", str(lay.python), *reqs])
        if r.returncode != 0:
            raise BuildError(f"removing failed; {t.prefix} is unchanged:\n{uv_reason(r.stderr or r.stdout)}")
        old = read(lay.path)

        def named(req: str) -> str | None:
            try:
                return req_name(req)
            except Exception:  # noqa: BLE001  # a hand-edited line: kept as it is
                return None

        if any(named(q) in reqs for q in old.requirements):
            write(lay.path, Requested(tuple(q for q in old.requirements if named(q) not in reqs), old.shadow))
        after = _installed(lay.site_packages)
    return Changed(t.prefix, t.kind, source, (), tuple(before[k] for k in sorted(set(before) - set(after))))
