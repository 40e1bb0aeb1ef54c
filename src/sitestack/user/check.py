"""What a layer sees, what it shadows, and which requirements are broken (like `pip check`).

The distributions come from a small probe run by the layer's own python, in the caller's
environment: sys.path is then exactly what an import would search (layer, user site when
enabled, stack, PYTHONPATH), in that order, and the first distribution of a name wins, as
importlib.metadata.distribution() would pick it. Markers and specifiers are then evaluated
here with `packaging`, against the marker environment the probe reports.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.errors import UsageError
from sitestack.user.layer import Layer, find_stack

PROBE = r"""
import json, os, platform, site, sys
from importlib import metadata
def fmt(i):
    v = "%d.%d.%d" % (i.major, i.minor, i.micro)
    return v if i.releaselevel == "final" else v + i.releaselevel[0] + str(i.serial)
def dists(entry):
    out = []
    try:
        found = list(metadata.distributions(path=[entry]))
    except Exception:
        return out
    for d in found:
        name = d.metadata["Name"]
        if name:
            out.append({"name": name, "version": d.version, "requires": list(d.requires or []),
                        "requires_python": d.metadata.get("Requires-Python")})
    return out
paths = [p for p in sys.path[1:] if os.path.isdir(p) or os.path.isfile(p)]
extra = [p for p in sys.argv[1:] if p not in paths and os.path.isdir(p)]
print(json.dumps({
    "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "user_site": site.getusersitepackages() if site.ENABLE_USER_SITE else None,
    "entries": [{"path": p, "on_path": p in paths, "dists": dists(p)} for p in paths + extra],
    "env": {"implementation_name": sys.implementation.name,
            "implementation_version": fmt(sys.implementation.version),
            "os_name": os.name, "platform_machine": platform.machine(),
            "platform_release": platform.release(), "platform_system": platform.system(),
            "platform_version": platform.version(),
            "python_full_version": platform.python_version(),
            "platform_python_implementation": platform.python_implementation(),
            "python_version": ".".join(platform.python_version_tuple()[:2]),
            "sys_platform": sys.platform},
}))
"""


@dataclass(frozen=True)
class Dist:
    name: str  # canonical
    display: str
    version: str
    requires: tuple[str, ...]
    requires_python: str | None
    path: str  # the sys.path entry it was found in
    where: str  # "layer", "stack", "user", "other"


@dataclass(frozen=True)
class View:
    """Everything the layer's python can see, in sys.path order."""

    layer: Path
    stack_site_packages: Path | None
    user_site: str | None
    env: dict[str, str]
    dists: tuple[Dist, ...]  # every dist on sys.path, earlier entries first
    stack_dists: tuple[Dist, ...]  # the stack's, whether on sys.path or not

    def visible(self) -> dict[str, Dist]:
        out: dict[str, Dist] = {}
        for d in self.dists:
            out.setdefault(d.name, d)
        return out

    def in_layer(self) -> dict[str, Dist]:
        return {d.name: d for d in reversed(self.dists) if d.where == "layer"}


@dataclass(frozen=True)
class Shadow:
    name: str
    layer_version: str
    stack_version: str
    active: str  # which one an import gets: "layer" or "stack"


@dataclass(frozen=True)
class Problem:
    dist: str
    version: str
    where: str
    kind: str  # "missing", "conflict", "python"
    requirement: str
    found: str | None  # installed version, for conflicts
    found_where: str | None
    fix: str

    def message(self) -> str:
        if self.kind == "missing":
            return f"{self.dist} {self.version} requires {self.requirement}, which is not installed"
        if self.kind == "python":
            return f"{self.dist} {self.version} requires Python {self.requirement}, but this is {self.found}"
        return (f"{self.dist} {self.version} requires {self.requirement}, but {self.found} "
                f"is visible (from the {self.found_where})")


def _where(entry: str, layer: Path, stack_prefix: Path | None, user_site: str | None) -> str:
    real = os.path.realpath(entry)
    if real == os.path.realpath(layer) or real.startswith(os.path.realpath(layer) + os.sep):
        return "layer"
    if user_site and real == os.path.realpath(user_site):
        return "user"
    if stack_prefix is not None:
        sp = os.path.realpath(stack_prefix)
        if real.startswith(sp + os.sep):
            return "stack"
    return "other"


def probe(layer: Layer, env: dict[str, str] | None = None) -> View:
    """Run the probe in the layer's own python (its environment: the caller's)."""
    from packaging.utils import canonicalize_name

    rec = find_stack(layer)
    stack_sp = rec.site_packages if rec else None
    py = layer.path / "bin" / "python"
    if not py.exists():
        raise UsageError(f"{layer.path}: its python does not run (home {layer.home} is gone?)",
                         hint=f"sitestack doctor {layer.path}")
    run_env = dict(os.environ if env is None else env)
    run_env.pop("PYTHONSAFEPATH", None)
    argv = [str(py), "-c", PROBE] + ([str(stack_sp)] if stack_sp else [])
    try:
        r = subprocess.run(argv, capture_output=True, text=True, env=run_env, timeout=120)
    except OSError as e:
        raise UsageError(f"{py} does not run: {e}") from None
    if r.returncode != 0:
        raise UsageError(f"{py} failed to list its packages: {r.stderr.strip().splitlines()[-1:]}")
    data: dict[str, Any] = json.loads(r.stdout)
    user_site = data.get("user_site")
    dists: list[Dist] = []
    stack_dists: list[Dist] = []
    for ent in data["entries"]:
        where = _where(ent["path"], layer.path, rec.prefix if rec else None, user_site)
        for d in ent["dists"]:
            dist = Dist(canonicalize_name(d["name"]), d["name"], d["version"], tuple(d["requires"]),
                        d.get("requires_python"), ent["path"], where)
            if ent["on_path"]:
                dists.append(dist)
            if stack_sp is not None and os.path.realpath(ent["path"]) == os.path.realpath(stack_sp):
                stack_dists.append(dist)
    return View(layer.path, stack_sp, user_site, dict(data["env"]), tuple(dists), tuple(stack_dists))


def shadows(view: View) -> list[Shadow]:
    """Each distribution in both the layer and the stack."""
    stack = {d.name: d for d in reversed(view.stack_dists)}
    visible = view.visible()
    out = []
    for name, d in sorted(view.in_layer().items()):
        if name in stack:
            active = visible.get(name)
            out.append(Shadow(d.display, d.version, stack[name].version,
                              active.where if active else "layer"))
    return out


def _fix(view: View, req: str, found: Dist | None, spec_ok_in_stack: bool) -> str:
    py = view.layer / "bin" / "python"
    if found is not None and found.where == "layer" and spec_ok_in_stack:
        return f"{py} -m pip uninstall -y {found.display}"
    return f"{py} -m pip install '{req}'"


def check(view: View) -> list[Problem]:
    """Broken requirements across layer, user site and stack, as pip check would see them."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    visible = view.visible()
    stack = {d.name: d for d in reversed(view.stack_dists)}
    problems: list[Problem] = []
    # (dist, extra) pairs to check; extras that another dist asks for are checked too.
    todo: list[tuple[str, str]] = [(n, "") for n in visible]
    seen: set[tuple[str, str]] = set()
    py_version = view.env.get("python_full_version", "")
    while todo:
        name, extra = todo.pop(0)
        if (name, extra) in seen or name not in visible:
            continue
        seen.add((name, extra))
        dist = visible[name]
        if not extra and dist.requires_python:
            try:
                if py_version and not SpecifierSet(dist.requires_python).contains(py_version, prereleases=True):
                    problems.append(Problem(dist.display, dist.version, dist.where, "python",
                                            dist.requires_python, py_version, None,
                                            f"{view.layer / 'bin' / 'python'} -m pip install --upgrade {dist.display}"))
            except InvalidSpecifier:
                pass
        for raw in dist.requires:
            try:
                req = Requirement(raw)
            except InvalidRequirement:
                continue
            if req.marker is not None:
                if not req.marker.evaluate({**view.env, "extra": extra}):
                    continue
            elif extra:
                continue  # unconditional requirements were checked with extra ""
            target = canonicalize_name(req.name)
            for e in req.extras:
                todo.append((target, canonicalize_name(e)))
            text = f"{req.name}{req.specifier}"
            found = visible.get(target)
            if found is None:
                problems.append(Problem(dist.display, dist.version, dist.where, "missing", text,
                                        None, None, _fix(view, text, None, False)))
                continue
            try:
                ok = req.specifier.contains(Version(found.version), prereleases=True)
            except InvalidVersion:
                ok = True
            if not ok:
                s = stack.get(target)
                stack_ok = s is not None and _contains(req.specifier, s.version)
                problems.append(Problem(dist.display, dist.version, dist.where, "conflict", text,
                                        found.version, found.where, _fix(view, text, found, stack_ok)))
    return problems


def _contains(spec: Any, version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return bool(spec.contains(Version(version), prereleases=True))
    except InvalidVersion:
        return False


def shadow_json(items: list[Shadow]) -> list[dict[str, str]]:
    return [{"name": s.name, "layer": s.layer_version, "stack": s.stack_version, "active": s.active}
            for s in items]


def problem_json(items: list[Problem]) -> list[dict[str, Any]]:
    return [{"dist": p.dist, "version": p.version, "where": p.where, "kind": p.kind,
             "requirement": p.requirement, "found": p.found, "found_where": p.found_where,
             "message": p.message(), "fix": p.fix} for p in items]


@dataclass(frozen=True)
class CheckResult:
    """`sitestack check PATH`: the layer's broken requirements (none: ok)."""

    layer: Path
    stack: str
    checked: int  # distributions the layer sees
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"layer": str(self.layer), "stack": self.stack, "ok": self.ok, "checked": self.checked,
                "problems": problem_json(list(self.problems))}


def check_layer(path: str | Path) -> CheckResult:
    from sitestack.user.layer import layer_stack, open_layer

    layer = open_layer(path)
    rec = layer_stack(layer)
    view = probe(layer)
    return CheckResult(layer.path, rec.ref, len(view.visible()), tuple(check(view)))


@dataclass(frozen=True)
class ShadowsResult:
    """`sitestack shadows PATH`: what the layer shadows in its stack."""

    layer: Path
    stack: str
    inherit: bool
    shadows: tuple[Shadow, ...]

    def to_json(self) -> dict[str, Any]:
        return {"layer": str(self.layer), "stack": self.stack, "inherit": self.inherit,
                "shadows": shadow_json(list(self.shadows))}


def layer_shadows(path: str | Path) -> ShadowsResult:
    from sitestack.user.layer import layer_stack, open_layer

    layer = open_layer(path)
    rec = layer_stack(layer)
    return ShadowsResult(layer.path, rec.ref, layer.inherit, tuple(shadows(probe(layer))))
