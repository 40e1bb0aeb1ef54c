"""A user's layer or clone as a Jupyter kernel, in the user's Jupyter data folder.

The kernel is written as the site's are (site/kernels.py: a launch script rendered from the
load plan, a folder swapped in whole): a layer's kernel gets its stack's module environment
plus what activating the layer adds (VIRTUAL_ENV, LAYER/bin first on PATH) and runs
LAYER/bin/python, so `sys.prefix` is the layer and ipykernel may come from the stack; a
clone's gets what the clone's modulefile gives and runs the clone's own python.

Names: [a-z0-9._-] (jupyter_client's rule), others normalised and shown. A name is never
taken from a kernel sitestack did not write, nor from one earlier on Jupyter's search path
(JUPYTER_PATH first: it would hide ours); another environment's kernel of ours only with
--force. `kernel list`, `remove`, `prune`, doctor's stale-kernel findings and rebase's
rewrite read kernels back through ``site.kernels.read_spec`` (shape-checked, no links).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.errors import ConflictError, NotFoundError, UsageError
from sitestack.site.kernels import (
    HOME_MARK,
    KERNEL_JSON,
    LAUNCH,
    KernelFiles,
    Spec,
    kernel_json,
    launcher,
    list_specs,
    logos,
    publish_kernel,
    read_spec,
)
from sitestack.user.kernelcheck import has_ipykernel, problems

if TYPE_CHECKING:
    from typing import Any

    from sitestack.core.records import StackRecord
    from sitestack.site.modulefiles.content import Op

HEADER = "Written by sitestack kernel add; do not edit. `sitestack kernel add` again rewrites it."
GENERIC = {"venv", ".venv", "env", ".env", "virtualenv", "layer"}  # names that say nothing alone
_BAD = re.compile(r"[^a-z0-9._-]+")


def data_dir(env: Mapping[str, str]) -> Path:
    """Jupyter's user data folder, as jupyter_core finds it on Linux."""
    if env.get("JUPYTER_DATA_DIR"):
        return Path(os.path.abspath(os.path.expanduser(env["JUPYTER_DATA_DIR"])))
    xdg = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "share")
    return Path(os.path.abspath(xdg)) / "jupyter"


def user_kernels(env: Mapping[str, str]) -> Path:
    return data_dir(env) / "kernels"


def search_path(env: Mapping[str, str]) -> list[Path]:
    """Kernel folders in the order Jupyter searches them: JUPYTER_PATH, the user's, the system's."""
    dirs = [Path(p) / "kernels" for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    dirs += [user_kernels(env), Path("/usr/local/share/jupyter/kernels"), Path("/usr/share/jupyter/kernels")]
    return list(dict.fromkeys(dirs))


def normalise(text: str) -> str:
    return _BAD.sub("-", text.lower()).strip("-.")


# --- the environment ----------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    kind: str  # "layer" | "clone"
    path: Path
    python: Path  # what the launcher execs
    ref: str  # NAME/VERSION of its stack
    root: str
    python_xy: str
    ops: tuple[Op, ...]
    messages: tuple[str, ...]
    modules: str  # depends_on modules no site stack provides ("a, b")
    debugger: bool

    @property
    def label(self) -> str:
        """The folder's name, with its parent's where the name alone says nothing (proj/venv)."""
        p = self.path
        return f"{p.parent.name}/{p.name}" if p.name.lower() in GENERIC and p.parent.name else p.name

    @property
    def default_display(self) -> str:
        what = f"{self.label} on {self.ref}" if self.kind == "layer" else f"{self.label}, clone of {self.ref}"
        return f"Python {self.python_xy} ({what})"

    @property
    def default_name(self) -> str:
        return normalise(self.label.replace("/", "-")) or "env"


def active_env(env: Mapping[str, str]) -> str:
    for var in ("VIRTUAL_ENV", "SITESTACK_CLONE"):
        if env.get(var):
            return env[var]
    raise UsageError("no environment is active ($VIRTUAL_ENV and $SITESTACK_CLONE are unset): "
                     "give the layer's or clone's PATH")


def target(path: str | os.PathLike[str]) -> Target:
    """The layer or clone at `path`; UsageError (exit 2) for anything else."""
    from sitestack.core.layout import records_dir
    from sitestack.user.clone import CLONE_RECORD

    p = Path(os.path.abspath(os.path.expanduser(path)))
    if not p.is_dir():
        raise NotFoundError(f"{p} does not exist or is not a folder")
    if (p / "pyvenv.cfg").is_file():
        return _layer_target(p)
    if (records_dir(p) / CLONE_RECORD).is_file():
        return _clone_target(p)
    if (records_dir(p) / "stack.json").is_file():
        raise UsageError(f"{p} is a site stack: its kernel is the site's (`sitestack modulefiles` "
                         "writes it); give a layer or a clone of it")
    raise UsageError(f"{p} is not an environment on a stack (no pyvenv.cfg, no "
                     f".sitestack/{CLONE_RECORD}): give a layer (`sitestack venv`) or a clone")


def _plan(rec: StackRecord) -> tuple[list[Op], list[str], str]:
    from sitestack.core.layout import SiteRoot
    from sitestack.site.loadplan import load_plan
    from sitestack.site.registry import Site

    plan = load_plan(Site(SiteRoot(rec.root)), rec, HOME_MARK)
    messages = [f"{ref} is deprecated: {text}" for kind, ref, text in plan.notes if kind == "deprecated"]
    return list(plan.ops), messages, ", ".join(plan.modules)


def _layer_target(p: Path) -> Target:
    from sitestack.user.layer import layer_stack, open_layer

    layer = open_layer(p)
    rec = layer_stack(layer)  # NotFoundError (exit 2): a venv of no stack, or of a gone one
    own = has_ipykernel(layer.site_packages)
    if not own and not layer.inherit:
        raise UsageError(f"{p} does not inherit {rec.ref}'s packages and has no ipykernel of its own",
                         hint=f"sitestack inherit {p} on  (or: {p}/bin/python -m pip install ipykernel)")
    if not own and not has_ipykernel(rec.site_packages):
        raise UsageError(f"neither {p} nor its stack {rec.ref} has ipykernel",
                         hint=f"sitestack install --layer {p} ipykernel")
    ops, messages, modules = _plan(rec)
    # What `source LAYER/bin/activate` adds on top of the module.
    ops += [("set", "VIRTUAL_ENV", str(p)), ("prepend", "PATH", str(p / "bin"))]
    return Target("layer", p, p / "bin" / "python", rec.ref, str(rec.root), rec.python_xy, tuple(ops),
                  tuple(messages), modules, "debugpy" in rec.packages)


def _clone_target(p: Path) -> Target:
    from sitestack.site.modulefiles.content import ModuleContent
    from sitestack.user.clone import clone_user_base, load_clone_record

    data = load_clone_record(p) or {}
    ref, xy, site, python = (data.get(k) for k in ("source", "python_xy", "site", "python"))
    src = data.get("source_prefix")
    if not all(isinstance(v, str) and v for v in (ref, xy, site, python, src)) \
            or not re.fullmatch(r"\d+\.\d+", str(xy)) or "/" not in str(ref):
        raise UsageError(f"{p}: its clone record is not what `sitestack clone` writes")
    name, _, version = str(ref).partition("/")
    exe = p / "bin" / f"python{xy}"
    if not os.path.isfile(exe):
        raise UsageError(f"{p}: its interpreter {exe} is missing")
    if not has_ipykernel(p / "lib" / f"python{xy}" / "site-packages"):
        raise UsageError(f"the clone {p} has no ipykernel", hint=f"{exe} -m pip install ipykernel")
    root = str(Path(str(src)).parents[2])
    c = ModuleContent(name=name, version=version, prefix=str(p), root=root, site=str(site),
                      python=str(python), description="", help="", packages=(), family="",
                      depends_on=(), setenv=(), prepend_path=(), deprecated=None,
                      conda=(p / "conda-meta").is_dir(), user_base=clone_user_base(p), clone=True)
    debugger = (p / "lib" / f"python{xy}" / "site-packages" / "debugpy").is_dir()
    return Target("clone", p, exe, str(ref), root, str(xy), tuple(c.env_plan(HOME_MARK)), (), "", debugger)


# --- writing ------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelResult:
    name: str
    display_name: str
    path: Path  # the kernel's folder
    env: Path
    kind: str
    stack: str
    asked: str | None  # the --name given, where it was normalised
    replaced: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "display_name": self.display_name, "path": str(self.path),
                "env": str(self.env), "kind": self.kind, "stack": self.stack,
                "asked_name": self.asked, "replaced": self.replaced}


def render(t: Target, kdir: Path, display_name: str) -> KernelFiles:
    script = launcher(t.ops, str(t.python), ["-m", "ipykernel_launcher"],
                      modules=(t.ref, t.modules) if t.modules else None, messages=t.messages,
                      header=HEADER)
    meta = {"kind": t.kind, "env": str(t.path), "stack": t.ref, "root": t.root, "python": str(t.python)}
    sp = t.path / "lib" / f"python{t.python_xy}" / "site-packages"
    if not (sp / "ipykernel").is_dir():
        sp = Path(t.root) / "stacks" / t.ref / "lib" / f"python{t.python_xy}" / "site-packages"
    return KernelFiles(kdir.name, display_name, {
        KERNEL_JSON: (kernel_json([str(kdir / LAUNCH), "-f", "{connection_file}"], display_name, meta,
                                  debugger=t.debugger), 0o644),
        LAUNCH: (script.encode(), 0o755), **logos(sp)})


def _holder(name: str, env: Mapping[str, str]) -> Spec | None:
    """What holds `name` in the user's folder or one Jupyter searches before it (or a folder
    there that is no kernel: a link, a file, no kernel.json). A system kernel searched after
    the user's folder is only shadowed by a user kernel of its name, as `ipykernel install
    --user` does, never changed."""
    mine = user_kernels(env)
    for d in search_path(env):
        if os.path.lexists(d / name):
            return read_spec(d / name) or Spec(d / name, name, (), name, {})
        if d == mine:
            break
    return None


def _choose_name(t: Target, asked: str | None, force: bool, env: Mapping[str, str]) -> tuple[str, bool]:
    """(name, replaces a kernel of ours for another environment)."""
    mine = user_kernels(env)
    if asked is not None:
        name = normalise(asked)
        if not name:
            raise UsageError(f"--name {asked!r}: a kernel name needs letters or digits ([a-z0-9._-])")
        candidates = [name]
    else:
        base = t.default_name
        candidates = [base] + [f"{base}-{i}" for i in range(2, 100)]
    for name in candidates:
        held = _holder(name, env)
        if held is None:
            return name, False
        same_env = held.meta.get("env") == str(t.path)
        if held.path.parent == mine and held.ours and (same_env or force and asked is not None):
            return name, not same_env
        if asked is None:
            continue  # a default name: the next one
        if held.path.parent != mine:
            raise ConflictError(f"a kernel named {name!r} is in {held.path.parent}, which Jupyter "
                                "searches first: it would hide this one; choose another --name")
        if not held.ours:
            raise ConflictError(f"{held.path} was not written by sitestack; it is never replaced "
                                "(choose another --name)")
        raise ConflictError(f"kernel {name!r} is already the kernel of {held.meta.get('env')}",
                            hint="choose another --name, or --force to give the name to this one")
    raise ConflictError(f"no free kernel name from {t.default_name!r}: give --name")


def add_kernel(path: str | None, *, name: str | None = None, display_name: str | None = None,
               force: bool = False, env: Mapping[str, str] | None = None) -> KernelResult:
    """Register the layer or clone at `path` (default: the active one) as a kernel."""
    from sitestack.core.fsutil import check_can_create

    env = dict(os.environ) if env is None else env
    t = target(path or active_env(env))
    if display_name is not None and (not display_name.strip() or any(c in display_name for c in "\n\r\0")):
        raise UsageError("--display-name must be one line of text")
    kname, replaced = _choose_name(t, name, force, env)
    kdirs = user_kernels(env)
    check_can_create(kdirs / kname, f"the kernel {kname}")  # exit 5 where the user cannot write
    k = render(t, kdirs / kname, display_name.strip() if display_name else t.default_display)
    _publish(k, kdirs)
    return KernelResult(kname, k.display_name, kdirs / kname, t.path, t.kind, t.ref,
                        name if name is not None and name != kname else None, replaced)


def _publish(k: KernelFiles, kdirs: Path) -> None:
    scratch = kdirs.parent / ".sitestack-kernels-tmp"  # beside, not in, kernels/: Jupyter lists every folder there
    try:
        publish_kernel(k, kdirs, scratch, readonly=False)
    except PermissionError as e:
        raise ConflictError(f"cannot write the kernel {k.name} in {kdirs}: {e.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(scratch)


def rewrite_for(env_path: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """Rewrite the user's kernels of the environment at `env_path` (after a rebase): same
    names and display names, the environment as it is now."""
    env = dict(os.environ) if env is None else env
    kdirs = user_kernels(env)
    done = []
    for spec in list_specs(kdirs):
        if spec.ours and spec.meta.get("env") == str(env_path):
            t = target(env_path)
            display = spec.display_name
            if spec.meta.get("stack") and spec.meta["stack"] != t.ref:
                display = display.replace(spec.meta["stack"], t.ref)
            _publish(render(t, kdirs / spec.name, display), kdirs)
            done.append(spec.name)
    return done


# --- reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelInfo:
    name: str
    display_name: str
    path: Path
    kind: str  # stack | retired | layer | clone | "" (not ours)
    env: str
    stack: str
    problem: str  # "" when fine

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "display_name": self.display_name, "path": str(self.path),
                "kind": self.kind or None, "env": self.env or None, "stack": self.stack or None,
                "ok": not self.problem, "problem": self.problem or None}


def list_kernels(env: Mapping[str, str] | None = None) -> list[KernelInfo]:
    """Every kernel of sitestack's that Jupyter finds (the site's through JUPYTER_PATH, the
    user's), first on the search path wins, as in Jupyter."""
    env = dict(os.environ) if env is None else env
    seen: set[str] = set()
    out = []
    for d in search_path(env):
        for spec in list_specs(d):
            if spec.name in seen:
                continue
            seen.add(spec.name)
            if spec.ours:
                probs = problems(spec)
                out.append(KernelInfo(spec.name, spec.display_name, spec.path, spec.meta["kind"],
                                      spec.meta.get("env", ""), spec.meta.get("stack", ""),
                                      probs[0][1] if probs else ""))
    return out


def remove_kernel(name: str, env: Mapping[str, str] | None = None) -> Path:
    from sitestack.core.fsutil import rmtree

    env = dict(os.environ) if env is None else env
    kdirs = user_kernels(env)
    if name != normalise(name) or not name:
        raise UsageError(f"{name!r} is not a kernel name")
    spec = read_spec(kdirs / name)
    if spec is None:
        raise NotFoundError(f"no kernel {name!r} in {kdirs}")
    if not spec.ours:
        raise UsageError(f"{spec.path} was not written by sitestack; it is left alone",
                         hint=f"jupyter kernelspec remove {name}")
    try:
        rmtree(spec.path)
    except PermissionError as e:
        raise ConflictError(f"cannot remove {spec.path}: {e.strerror}") from None
    return spec.path


def prune(dry_run: bool = False, env: Mapping[str, str] | None = None) -> list[KernelInfo]:
    """Remove the user's kernels of ours whose environment is gone (its folder deleted, or no
    longer a layer or clone). A layer whose stack was retired is kept: a rebase mends it."""
    from sitestack.core.fsutil import rmtree

    env = dict(os.environ) if env is None else env
    gone = []
    for spec in list_specs(user_kernels(env)):
        if spec.meta.get("kind") not in ("layer", "clone"):
            continue
        p = Path(spec.meta.get("env", ""))
        if p.is_absolute() and ((p / "pyvenv.cfg").is_file() or (p / ".sitestack" / "clone.json").is_file()):
            continue
        gone.append(KernelInfo(spec.name, spec.display_name, spec.path, spec.meta["kind"], str(p),
                               spec.meta.get("stack", ""), f"its environment {p} is gone"))
        if not dry_run:
            rmtree(spec.path)
    return gone


def stale(env: Mapping[str, str] | None = None) -> list[tuple[str, str, str, str]]:
    """(kind, kernel folder, message, fix) of every stale kernel in the user's data folder."""
    env = dict(os.environ) if env is None else env
    return [(kind, str(spec.path), msg, fix) for spec in list_specs(user_kernels(env))
            for kind, msg, fix in problems(spec)[:1]]
