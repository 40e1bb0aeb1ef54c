"""The stack spec (TOML): parse, validate, and say exactly which key is wrong."""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitestack.core.records import UserPolicy
from sitestack.core.shape import line_safe
from sitestack.errors import SpecError

# Used with fullmatch only: `$` also matches before a final newline, so "NAME\n" would pass.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FAMILY_RE = re.compile(r"[A-Za-z0-9_]+")
DIST_RE = re.compile(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]")  # PEP 508 names


@dataclass(frozen=True)
class BuildOptions:
    no_binary: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    # False: built with the set's own packages importable (horovod's build imports torch),
    # not in uv's isolated build env; the set's pins then join the build's cache key.
    build_isolation: bool = True


@dataclass(frozen=True)
class PackagesSpec:
    requirements: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_url: tuple[str, ...] = ()
    no_index: bool = False
    build: Mapping[str, BuildOptions] = field(default_factory=dict)


@dataclass(frozen=True)
class ModuleSpec:
    depends_on: tuple[str, ...] = ()
    family: str = "python"
    setenv: Mapping[str, str] = field(default_factory=dict)
    prepend_path: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    help: str = ""


@dataclass(frozen=True)
class TestsSpec:
    imports: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    timeout: float = 600.0
    # [tests.gpu]: run only where a GPU is visible (build.smoke.gpu_visible), else skipped
    gpu_imports: tuple[str, ...] = ()
    gpu_commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class CondaSpec:
    channels: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackSpec:
    name: str
    python: str
    site: str
    description: str
    packages: PackagesSpec
    module: ModuleSpec
    tests: TestsSpec
    conda: CondaSpec | None = None
    source: Path | None = None
    text: str = ""
    user: UserPolicy = field(default_factory=UserPolicy)  # [user]: installs into layers
    jupyter: JupyterSpec = field(default_factory=lambda: JupyterSpec())  # [jupyter]: the site kernel


@dataclass(frozen=True)
class JupyterSpec:
    """[jupyter]: `kernel` None means on where the stack holds ipykernel (site/kernels.py)."""

    kernel: bool | None = None
    display_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "display-name": self.display_name}


_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "stack": {"name": str, "python": str, "site": str, "description": str},
    "packages": {
        "requirements": list,
        "find-links": list,
        "index-url": str,
        "extra-index-url": list,
        "no-index": bool,
        "build": dict,
    },
    "module": {"depends_on": list, "family": str, "setenv": dict, "prepend_path": dict, "help": str},
    "tests": {"imports": list, "commands": list, "timeout": (int, float), "gpu": dict},
    "conda": {"channels": list, "packages": list},
    "user": {"find-links": list, "index-url": str, "extra-index-url": list, "no-index": bool,
             "constraints": list, "only-binary": list},
    "jupyter": {"kernel": bool, "display-name": str},
}
_TYPE_NAMES = {str: "a string", list: "a list", dict: "a table", bool: "true or false"}


def check_name(value: str, key: str, source: str | None = None) -> str:
    """Names and versions become path parts and module names: keep them plain."""
    if not isinstance(value, str) or not value:
        raise SpecError(key, "must be a non-empty string", source=source)
    if "/" in value or ".." in value or any(c.isspace() for c in value):
        raise SpecError(key, f"{value!r} must not contain '/', '..' or spaces", source=source)
    if not NAME_RE.fullmatch(value):
        raise SpecError(
            key, f"{value!r} may use only letters, digits, '.', '_', '+' and '-'", source=source
        )
    from sitestack.core.safepath import MAX_COMPONENT

    if len(value) > MAX_COMPONENT:  # ASCII by NAME_RE: characters are bytes
        raise SpecError(key, f"is {len(value)} characters long; at most {MAX_COMPONENT}", source=source)
    return value


def _typecheck(table: Mapping[str, Any], section: str, src: str | None) -> None:
    allowed = _KEYS[section]
    for key, value in table.items():
        if key not in allowed:
            near = ", ".join(sorted(allowed))
            raise SpecError(f"{section}.{key}", f"unknown key (allowed: {near})", source=src)
        want = allowed[key]
        # TOML booleans are ints to Python; only a bool may stand where a bool is wanted.
        ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
        if not ok:
            name = _TYPE_NAMES.get(want, "a number") if isinstance(want, type) else "a number"
            raise SpecError(f"{section}.{key}", f"must be {name}, not {type(value).__name__}", source=src)


def _strings(values: list[Any], key: str, src: str | None) -> tuple[str, ...]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise SpecError(f"{key}[{i}]", f"must be a string, not {type(v).__name__}", source=src)
    return tuple(values)


def _str_map(values: dict[str, Any], key: str, src: str | None) -> dict[str, str]:
    for k, v in values.items():
        if not ENV_RE.fullmatch(k):
            raise SpecError(f"{key}.{k}", "is not a valid environment variable name", source=src)
        if not isinstance(v, str):
            raise SpecError(f"{key}.{k}", f"must be a string, not {type(v).__name__}", source=src)
        _no_line_breaks(v, f"{key}.{k}", src)
    return dict(values)


def _no_line_breaks(value: str, key: str, src: str | None) -> str:
    # Lmod 8.6 emits a newline in a value unquoted to the shell, which would run the rest
    # of the value as a command; in a layer's pip.conf it starts a setting of its own.
    # Refuse it rather than write a dangerous modulefile or config (core.shape.line_safe).
    if not line_safe(value):
        raise SpecError(key, "must not contain a line break, NUL or other control character "
                        "(module systems and pip.conf cannot carry it safely)", source=src)
    return value


def _one_line(values: tuple[str, ...], key: str, src: str | None) -> tuple[str, ...]:
    for i, v in enumerate(values):
        _no_line_breaks(v, f"{key}[{i}]", src)
    return values


def _pip_conf_value(value: str, key: str, src: str | None) -> None:
    _no_line_breaks(value, key, src)
    if not value.strip() or value != value.strip():
        raise SpecError(key, "must not be empty or start or end with spaces (a line of pip.conf)", source=src)


def _requirements(values: list[Any], key: str, src: str | None) -> tuple[str, ...]:
    from packaging.requirements import InvalidRequirement, Requirement

    reqs = _strings(values, key, src)
    for i, r in enumerate(reqs):
        try:
            Requirement(r)
        except InvalidRequirement as e:
            first = str(e).splitlines()[0]
            raise SpecError(f"{key}[{i}]", f"invalid requirement {r!r}: {first}", source=src) from None
    return reqs


def _build_options(values: dict[str, Any], src: str | None) -> dict[str, BuildOptions]:
    from packaging.utils import canonicalize_name

    out: dict[str, BuildOptions] = {}
    for pkg, opts in values.items():
        key = f"packages.build.{pkg}"
        if not isinstance(opts, dict):
            raise SpecError(key, "must be a table with 'env', 'no-binary' and/or 'build-isolation'", source=src)
        for k in opts:
            if k not in ("env", "no-binary", "build-isolation"):
                raise SpecError(f"{key}.{k}", "unknown key (allowed: env, no-binary, build-isolation)", source=src)
        nb, iso = opts.get("no-binary", False), opts.get("build-isolation", True)
        for k, v in (("no-binary", nb), ("build-isolation", iso)):
            if not isinstance(v, bool):
                raise SpecError(f"{key}.{k}", "must be true or false", source=src)
        env = opts.get("env", {})
        if not isinstance(env, dict):
            raise SpecError(f"{key}.env", "must be a table of strings", source=src)
        out[canonicalize_name(pkg)] = BuildOptions(nb, _str_map(env, f"{key}.env", src), iso)
    return out


def parse_spec(text: str, *, source: Path | None = None) -> StackSpec:
    src = str(source) if source else None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError("(toml)", f"not valid TOML: {e}", source=src) from None
    for section in data:
        if section not in _KEYS:
            raise SpecError(
                section, f"unknown table (allowed: {', '.join(sorted(_KEYS))})", source=src
            )
        if not isinstance(data[section], dict):
            raise SpecError(section, "must be a table", source=src)
        _typecheck(data[section], section, src)

    stack = data.get("stack")
    if stack is None:
        raise SpecError("stack", "missing table [stack]", source=src)
    if "name" not in stack:
        raise SpecError("stack.name", "missing (the module name, e.g. 'conda')", source=src)
    name = check_name(stack["name"], "stack.name", src)
    site = check_name(stack.get("site", "sitestack"), "stack.site", src)
    python = stack.get("python", f"{sys.version_info[0]}.{sys.version_info[1]}")
    if not python.strip():
        raise SpecError("stack.python", "must be a version like '3.11' or a path", source=src)

    base = source.parent if source else Path.cwd()
    p = data.get("packages", {})

    def local(link: str) -> str:
        # Relative find-links are relative to the spec file, so a spec can ship a wheelhouse.
        if "://" in link or Path(link).is_absolute():
            return link
        return str((base / link).resolve())

    packages = PackagesSpec(
        requirements=_requirements(p.get("requirements", []), "packages.requirements", src),
        find_links=tuple(local(x) for x in _strings(p.get("find-links", []), "packages.find-links", src)),
        index_url=p.get("index-url"),
        extra_index_url=_strings(p.get("extra-index-url", []), "packages.extra-index-url", src),
        no_index=p.get("no-index", False),
        build=_build_options(p.get("build", {}), src),
    )
    m = data.get("module", {})
    prepend: dict[str, tuple[str, ...]] = {}
    for var, paths in m.get("prepend_path", {}).items():
        key = f"module.prepend_path.{var}"
        if not ENV_RE.fullmatch(var):
            raise SpecError(key, "is not a valid environment variable name", source=src)
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list):
            raise SpecError(key, "must be a string or a list of strings", source=src)
        prepend[var] = _strings(paths, key, src)
        for i, path in enumerate(prepend[var]):
            _no_line_breaks(path, f"{key}[{i}]", src)
    module = ModuleSpec(
        depends_on=_one_line(_strings(m.get("depends_on", []), "module.depends_on", src), "module.depends_on", src),
        family=m.get("family", "python"),
        setenv=_str_map(m.get("setenv", {}), "module.setenv", src),
        prepend_path=prepend,
        help=m.get("help", ""),
    )
    if module.family and not FAMILY_RE.fullmatch(module.family):
        raise SpecError("module.family", "may use only letters, digits and '_'", source=src)
    t = data.get("tests", {})
    timeout = float(t.get("timeout", 600))
    if timeout <= 0:
        raise SpecError("tests.timeout", "must be a positive number of seconds", source=src)
    gpu = t.get("gpu", {})
    for k, v in gpu.items():
        if k not in ("imports", "commands"):
            raise SpecError(f"tests.gpu.{k}", "unknown key (allowed: commands, imports)", source=src)
        if not isinstance(v, list):
            raise SpecError(f"tests.gpu.{k}", f"must be a list of strings, not {type(v).__name__}", source=src)
    tests = TestsSpec(
        imports=_strings(t.get("imports", []), "tests.imports", src),
        commands=_strings(t.get("commands", []), "tests.commands", src),
        timeout=timeout,
        gpu_imports=_strings(gpu.get("imports", []), "tests.gpu.imports", src),
        gpu_commands=_strings(gpu.get("commands", []), "tests.gpu.commands", src),
    )
    conda = None
    if "conda" in data:
        c = data["conda"]
        conda = CondaSpec(
            channels=tuple(local(x) for x in _strings(c.get("channels", []), "conda.channels", src)),
            packages=_strings(c.get("packages", []), "conda.packages", src),
        )
        if not conda.channels:
            raise SpecError("conda.channels", "needs at least one channel", source=src)
        if not conda.packages:
            raise SpecError("conda.packages", "needs at least one package", source=src)
    u = data.get("user", {})
    only_binary = _strings(u.get("only-binary", []), "user.only-binary", src)
    for i, n in enumerate(only_binary):
        if not DIST_RE.fullmatch(n) and n != ":all:":
            raise SpecError(f"user.only-binary[{i}]", f"{n!r} is not a distribution name", source=src)
    # Every [user] value lands in a pip.conf in every layer, one value per line: each is
    # checked before it is resolved or written (find-links, index-url, extra-index-url and
    # constraints alike), and pip.conf's writer checks the record again (user.layer).
    for k in ("find-links", "extra-index-url"):
        for i, v in enumerate(_strings(u.get(k, []), f"user.{k}", src)):
            _pip_conf_value(v, f"user.{k}[{i}]", src)
    if "index-url" in u:
        _pip_conf_value(u["index-url"], "user.index-url", src)
    _one_line(_strings(u.get("constraints", []), "user.constraints", src), "user.constraints", src)
    user = UserPolicy(
        find_links=tuple(local(x) for x in _strings(u.get("find-links", []), "user.find-links", src)),
        index_url=u.get("index-url"),
        extra_index_url=_strings(u.get("extra-index-url", []), "user.extra-index-url", src),
        no_index=u.get("no-index", False),
        constraints=_requirements(u.get("constraints", []), "user.constraints", src),
        only_binary=only_binary,
    )
    j = data.get("jupyter", {})
    jupyter = JupyterSpec(kernel=j.get("kernel"), display_name=j.get("display-name", "").strip())
    if "display-name" in j and not jupyter.display_name:
        raise SpecError("jupyter.display-name", "must not be empty", source=src)
    _no_line_breaks(jupyter.display_name, "jupyter.display-name", src)
    return StackSpec(
        name=name,
        python=python,
        site=site,
        description=stack.get("description", ""),
        packages=packages,
        module=module,
        tests=tests,
        conda=conda,
        source=source,
        text=text,
        user=user,
        jupyter=jupyter,
    )


def load_spec(path: str | Path) -> StackSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("(file)", f"spec file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError("(file)", f"cannot read spec file {p}: {e}") from None
    return parse_spec(text, source=p.resolve())
