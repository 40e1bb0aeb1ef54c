"""What `conda activate X` may name, and what activating each changes.

- ``base`` (or nothing): the loaded stack ($SITESTACK_PREFIX); its plan is the modulefile's own
  (``ModuleContent.env_plan``), so activating base changes nothing the module did not.
- a PATH: a sitestack clone (``PATH/.sitestack/clone.json``; its plan is its personal
  modulefile's), a layer (a `sitestack venv` or a plain `python -m venv
  --system-site-packages` venv of a stack; ``layer_plan``, as its bin/activate), or the loaded
  stack's own prefix (base).
- a NAME: a clone or layer in the user's envs folder (``~/.conda/envs`` unless the site sets
  ``conda_envs_dir``), as conda looks names up.

Names follow conda's: ``base``, the folder's name for an environment in an envs folder (or
in any folder called ``envs``), else its full path; the prompt shows ``(NAME)``. Every path
and record read here comes from the user or the disk: each is checked, and anything that is
not one of the above is refused with one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sitestack.core.records import StackRecord
from sitestack.errors import NotFoundError, UsageError
from sitestack.site.modulefiles.content import Op, layer_plan

ENVS_DIR = "~/.conda/envs"  # conda's default; the site may set another (site config)
ENVIRONMENTS_TXT = "~/.conda/environments.txt"  # conda's list of environments it made
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
_UB = re.compile(r"\$HOME/([^/\x00-\x1f]+(?:/[^/\x00-\x1f]+)*)")  # clone.clone_user_base's shape


@dataclass(frozen=True)
class Target:
    kind: str  # base | clone | layer
    prefix: Path
    name: str  # CONDA_DEFAULT_ENV; the prompt shows (NAME)
    plan: tuple[Op, ...]
    stack: StackRecord | None  # the stack it is (base), sits on (layer) or came from (clone)
    python: Path

    @property
    def writable(self) -> bool:
        return self.kind != "base"


def home(env: Mapping[str, str]) -> str:
    h = env.get("HOME", "")
    if not h.startswith("/"):
        raise UsageError("$HOME is not an absolute path; the conda front door needs it")
    return h


def expand(path: str, env: Mapping[str, str]) -> Path:
    """`~`, `$HOME` and `$USER` expanded from `env`, then made absolute."""
    p = path.replace("$HOME", home(env)).replace("${HOME}", home(env))
    p = p.replace("$USER", env.get("USER", "")).replace("${USER}", env.get("USER", ""))
    if p == "~" or p.startswith("~/"):
        p = home(env) + p[1:]
    return Path(os.path.abspath(p))


def loaded_stack(env: Mapping[str, str]) -> StackRecord | None:
    """The stack the module put on PATH ($SITESTACK_PREFIX), checked to be one; None if none."""
    from sitestack.site.registry import Site

    raw = env.get("SITESTACK_PREFIX")
    if not raw:
        return None
    rec = Site.from_prefix(Path(raw)) if raw.startswith("/") else None
    if rec is None:
        raise UsageError(f"$SITESTACK_PREFIX={raw} is not a sitestack stack",
                         hint="module unload it and load the stack again")
    return rec


def need_stack(env: Mapping[str, str]) -> StackRecord:
    rec = loaded_stack(env)
    if rec is None:
        raise UsageError("no stack is loaded, so there is no base environment",
                         hint="module load NAME first (module avail lists them)")
    return rec


def envs_dirs(env: Mapping[str, str], rec: StackRecord | None) -> list[Path]:
    """Where `-n NAME` goes and names are looked up: the site's `conda_envs_dir`, else conda's."""
    configured = None
    if rec is not None:
        from sitestack.core.layout import SiteRoot
        from sitestack.site.config import read_config

        value = read_config(SiteRoot(rec.root)).get("conda_envs_dir")
        configured = value if isinstance(value, str) and value else None
    return [expand(configured or ENVS_DIR, env)]


def default_name(prefix: Path, dirs: list[Path]) -> str:
    """conda's CONDA_DEFAULT_ENV for an environment that is not base."""
    if prefix.parent in dirs or prefix.parent.name == "envs":
        return prefix.name
    return str(prefix)


def base_target(env: Mapping[str, str], rec: StackRecord) -> Target:
    from sitestack.core.layout import SiteRoot
    from sitestack.site.modulefiles import content_for
    from sitestack.site.registry import Site

    plan = content_for(rec, Site(SiteRoot(rec.root)).stack_state(rec.name)).env_plan(home(env))
    return Target("base", rec.prefix, "base", tuple(plan), rec, rec.python_exe)


def name_path(name: str, env: Mapping[str, str], rec: StackRecord | None) -> Path:
    """Where environment NAME lives (or goes): the first envs folder."""
    if not NAME.fullmatch(name) or name == "base":
        raise UsageError(f"{name!r} is not an environment name (letters, digits, . _ + -; not base)")
    return envs_dirs(env, rec)[0] / name


def resolve(arg: str | None, env: Mapping[str, str]) -> Target:
    """The environment `conda activate ARG` means."""
    rec = loaded_stack(env)
    if arg in (None, "", "base"):
        return base_target(env, need_stack(env))
    assert arg is not None
    if "/" in arg or arg.startswith(("~", ".")):
        return at_path(expand(arg, env), env, rec)
    for d in envs_dirs(env, rec):
        if NAME.fullmatch(arg) and (d / arg).is_dir():
            return at_path(d / arg, env, rec)
    where = ", ".join(str(d) for d in envs_dirs(env, rec))
    raise NotFoundError(f"no environment named {arg!r} (looked in {where}); nothing was activated",
                        hint="conda env list shows them; give a path to activate another folder")


def at_path(path: Path, env: Mapping[str, str], rec: StackRecord | None) -> Target:
    from sitestack.site.registry import Site

    if not path.is_dir():
        raise NotFoundError(f"{path} is not an environment: no such folder; nothing was activated")
    real = Path(os.path.realpath(path))
    if rec is not None and real == Path(os.path.realpath(rec.prefix)):
        return base_target(env, rec)
    dirs = envs_dirs(env, rec)
    clone = clone_target(path, env, dirs)
    if clone is not None:
        return clone
    if (path / "pyvenv.cfg").is_file():
        return layer_target(path, dirs)
    other = Site.from_prefix(path)
    if other is not None:
        raise UsageError(f"{path} is the stack {other.ref}, not an environment of yours; nothing "
                         "was activated", hint=f"module load {other.ref}")
    raise UsageError(f"{path} is not an environment (not a sitestack clone, layer or venv); nothing "
                     "was activated", hint="conda create --clone base -p DIR makes one")


def clone_info(path: Path) -> dict[str, str] | None:
    """A clone's record, checked field by field; None when `path` is not a clone."""
    from sitestack.user.clone import load_clone_record

    data = load_clone_record(path)
    if data is None:
        return None
    out = {}
    for key in ("source", "site", "python", "user_base"):
        value = data.get(key)
        if not isinstance(value, str) or not value or "\n" in value:
            raise UsageError(f"{path}/.sitestack/clone.json has no valid {key!r}; it is not a clone "
                             "sitestack can activate")
        out[key] = value
    source_prefix = data.get("source_prefix")
    out["source_prefix"] = source_prefix if isinstance(source_prefix, str) else ""
    if not _UB.fullmatch(out["user_base"]) or ".." in out["user_base"].split("/"):
        raise UsageError(f"{path}/.sitestack/clone.json: its user_base {out['user_base']!r} is not "
                         "under $HOME")
    return out


def clone_stack(info: Mapping[str, str]) -> StackRecord | None:
    """The stack a clone came from, where it still is."""
    from sitestack.site.registry import Site

    src = info.get("source_prefix", "")
    return Site.from_prefix(Path(src)) if src.startswith("/") else None


def clone_target(path: Path, env: Mapping[str, str], dirs: list[Path]) -> Target | None:
    from sitestack.user.cloneenv import clone_content

    info = clone_info(path)
    if info is None:
        return None
    xy = next((p.name.removeprefix("python") for p in sorted((path / "bin").glob("python3.*"))
               if re.fullmatch(r"python3\.\d+", p.name)), None)
    if xy is None:
        raise UsageError(f"{path} is a clone without its bin/python3.X; nothing was activated")
    c = clone_content(path, info["user_base"].removeprefix("$HOME/"), ref=info["source"], site=info["site"],
                      python=info["python"], conda=(path / "conda-meta").is_dir())
    return Target("clone", path, default_name(path, dirs), tuple(c.env_plan(home(env))), clone_stack(info),
                  path / "bin" / f"python{xy}")


def layer_target(path: Path, dirs: list[Path]) -> Target:
    from sitestack.user.layer import find_stack, open_layer

    lay = open_layer(path)
    rec = find_stack(lay)
    if rec is None:
        raise UsageError(f"{path} is a venv, but not one of a sitestack stack (home = {lay.home}); "
                         "nothing was activated", hint=f"source {path}/bin/activate")
    return Target("layer", lay.path, default_name(lay.path, dirs), tuple(layer_plan(str(lay.path))), rec,
                  lay.python)


def known_environments(env: Mapping[str, str]) -> list[Path]:
    """conda's ~/.conda/environments.txt: absolute paths, one a line (others are skipped)."""
    try:
        text = expand(ENVIRONMENTS_TXT, env).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return list(dict.fromkeys(Path(line) for line in text.splitlines()[:10000]
                              if line.startswith("/") and "\0" not in line))


def remember(env: Mapping[str, str], prefix: Path) -> None:
    """Add `prefix` to ~/.conda/environments.txt, as conda does for what it makes (best effort:
    a read-only home only means `conda env list` does not list it)."""
    from sitestack.core.fsutil import atomic_write_bytes

    path = expand(ENVIRONMENTS_TXT, env)
    known = known_environments(env)
    if prefix in known:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # No fsync: a list conda rebuilds from what it finds; a torn one is only shorter.
        atomic_write_bytes(path, "".join(f"{p}\n" for p in [*known, prefix]).encode(), durable=False)
    except OSError:
        pass
