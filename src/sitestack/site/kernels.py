"""Site kernels: every published version that holds ipykernel is a Jupyter kernel.

``ROOT/share/jupyter/kernels/KERNEL/`` holds ``kernel.json``, ``launch`` and ipykernel's logos.
``launch`` is a POSIX sh rendering of the version's load plan (site/loadplan.py, i.e.
``ModuleContent.env_plan`` with the stacks its depends_on loads): it strips what the Jupyter
server's own environment would leak in, makes every change `module load NAME/VERSION` makes
(HOME read at kernel start, as the modulefile reads it at load time), then execs the stack's
python, so the kernel is the process Jupyter signals (interrupt, restart).

A retired version's kernel is a stub (``retired-kernel.py``): every cell fails with the
retirement's date, message and what to use instead, and nothing of the user's runs.

Kernels are (re)written wherever the modulefiles are (``Site.write_modulefiles``: build,
default, deprecate, hide, retire, restore, `sitestack modulefiles`), each folder built in a
temp folder, made read-only and swapped in with one rename; an unchanged one is left alone.
A folder sitestack did not write (no ``metadata.sitestack`` naming this root) is never
replaced or removed. The user side (user/kernels.py) writes its kernels with the same steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.templates import render_file, sh_quote

if TYPE_CHECKING:
    from typing import Any, Protocol

    from sitestack.core.layout import SiteRoot
    from sitestack.core.records import RetiredRecord, StackRecord
    from sitestack.site.loadplan import Site as Plannable
    from sitestack.site.modulefiles.content import Op
    class Site(Plannable, Protocol):
        """What the kernels read of site.registry.Site (which calls write_site_kernels)."""

        root: SiteRoot

        def versions(self, name: str | None = None) -> list[StackRecord]: ...
        def retired(self, name: str | None = None) -> list[RetiredRecord]: ...
        def default_version(self, name: str) -> str | None: ...
        def version_state(self, rec: StackRecord, state: dict[str, Any] | None = None) -> Any: ...

HEADER = "Written by sitestack; do not edit. Run `sitestack modulefiles` to rewrite."
KERNEL_JSON = "kernel.json"
LAUNCH = "launch"
RETIRED_SCRIPT = "retired_kernel.py"
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")
META = "sitestack"  # our key in kernel.json's metadata: what marks a kernel as ours
# jupyter_client's rule for kernel names (it lower-cases them when it lists them).
_BAD = re.compile(r"[^a-z0-9._-]+")
# env_plan's HOME: the launcher reads HOME at kernel start. No '/', so path_join keeps it whole.
HOME_MARK = "\0HOME"


def kernel_name(text: str) -> str:
    """`text` as a kernel name: lower case, [a-z0-9._-]; where that changed it, a short hash
    of the exact text keeps two names apart (Conda/1 and conda/1, a+b and a-b)."""
    norm = _BAD.sub("-", text.lower()).strip("-.")
    if norm != text:
        norm = f"{norm}-{hashlib.sha256(text.encode()).hexdigest()[:6]}".lstrip("-")
    return norm


def stack_kernel_name(name: str, version: str) -> str:
    return kernel_name(f"sitestack-{name}-{version}")


def kernels_dir(root: Path) -> Path:
    return Path(root) / "share" / "jupyter" / "kernels"


@dataclass(frozen=True)
class KernelFiles:
    """One kernelspec folder: its name and files (name -> bytes, mode)."""

    name: str
    display_name: str
    files: Mapping[str, tuple[bytes, int]]


# --- rendering -----------------------------------------------------------------------------
def _sh_value(value: str) -> str:
    """A plan value as one sh word; HOME_MARK at its start becomes the HOME read at start."""
    if not value.startswith(HOME_MARK):
        return sh_quote(value)
    rest = value[len(HOME_MARK):]
    # path_join(HOME, x) in sh: "x" for an empty HOME, "/x" for "/", else "HOME/x".
    return '"${ss_home:+${ss_home%/}/}"' + sh_quote(rest.lstrip("/"))


def launcher(ops: Sequence[Op], python: str, args: Sequence[str], *,
             modules: tuple[str, str] | None = None, messages: Sequence[str] = (),
             header: str = HEADER) -> str:
    """The launch script: leaks out, the plan's changes in, then exec `python args "$@"`.

    `modules`: (the stack's ref, "a, b") depends_on modules no site stack provides, loaded
    with the module system found at kernel start ($LMOD_CMD, $MODULES_CMD)."""
    lines = []
    for kind, var, value in ops:
        if "\0" in value.removeprefix(HOME_MARK):  # the spec refuses NUL: a bug if seen here
            raise ValueError(f"{var}: a value with NUL cannot be passed to a kernel")
        if kind == "keep":
            continue  # what a module's unload puts back: a kernel's launch is never undone
        if kind == "set":
            lines.append(f"export {var}={_sh_value(value)}")
        else:
            lines.append(f"ss_prepend {var} {_sh_value(value)}")
    mod = ""
    if modules:
        ref, names = modules
        words = " ".join(sh_quote(m) for m in names.split(", "))
        missing = (f"sitestack: {ref} needs the modules {names}; no module system in the kernel's "
                   "environment ($LMOD_CMD, $MODULES_CMD): started without them")
        mod = "\n".join([
            'if [ -n "${LMOD_CMD:-}" ]; then eval "$("$LMOD_CMD" sh load ' + words + ')"',
            'elif [ -n "${MODULES_CMD:-}" ]; then eval "$("$MODULES_CMD" sh load ' + words + ')"',
            f"else printf '%s\\n' {sh_quote(missing)} >&2",
            "fi",
        ])
    msg = "\n".join(f"printf '%s\\n' {sh_quote(m)} >&2" for m in messages)
    return render_file("sitestack.site", "kernel-launch.sh", {"PYTHON": python}, raw={
        "HEADER": header, "MODULES": mod, "OPS": "\n".join(lines), "MESSAGES": msg,
        "ARGS": " ".join(sh_quote(a) for a in args)})


def kernel_json(argv: list[str], display_name: str, meta: dict[str, Any], *, debugger: bool) -> bytes:
    doc = {"argv": argv, "display_name": display_name, "language": "python",
           "interrupt_mode": "signal", "metadata": {"debugger": debugger, META: meta}}
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()


def logos(site_packages: Path) -> dict[str, tuple[bytes, int]]:
    """ipykernel's logos (the Launcher's card shows them), where the stack has them."""
    out = {}
    for name in LOGOS:
        try:
            out[name] = ((site_packages / "ipykernel" / "resources" / name).read_bytes(), 0o644)
        except OSError:
            continue
    return out


def has_ipykernel(rec: StackRecord) -> bool:
    return "ipykernel" in rec.packages or (rec.site_packages / "ipykernel" / "__init__.py").is_file()


def policy(rec: StackRecord) -> tuple[bool, str]:
    """(kernel on, display name or "") from the spec's [jupyter] table as recorded: on by
    default where the stack holds ipykernel. The build refused `kernel = true` without it."""
    table = rec.extra.get("jupyter")
    table = table if isinstance(table, dict) else {}
    on = table.get("kernel")
    name = table.get("display-name")
    return (has_ipykernel(rec) if not isinstance(on, bool) else on and has_ipykernel(rec),
            name if isinstance(name, str) else "")


def display_name(rec: StackRecord, custom: str, marks: list[str]) -> str:
    if custom:
        return custom + (f" ({', '.join(marks)})" if marks else "")
    return f"Python {rec.python_xy} ({', '.join([rec.ref, *marks])})"


def stack_kernel(site: Site, rec: StackRecord, kdir: Path, custom: str, marks: list[str]) -> KernelFiles:
    from sitestack.site.loadplan import load_plan

    plan = load_plan(site, rec, HOME_MARK)
    messages = [f"{ref} is deprecated: {text}" for kind, ref, text in plan.notes if kind == "deprecated"]
    modules = plan.modules
    script = launcher(list(plan.ops), str(rec.python_exe), ["-m", "ipykernel_launcher"],
                      modules=(rec.ref, ", ".join(modules)) if modules else None, messages=messages)
    name = display_name(rec, custom, marks)
    meta = {"kind": "stack", "stack": rec.ref, "root": str(site.root.path), "python": str(rec.python_exe)}
    files = {KERNEL_JSON: (kernel_json([str(kdir / LAUNCH), "-f", "{connection_file}"], name, meta,
                                       debugger="debugpy" in rec.packages), 0o644),
             LAUNCH: (script.encode(), 0o755), **logos(rec.site_packages)}
    return KernelFiles(kdir.name, name, files)


def retired_message(r: RetiredRecord, instead: str | None) -> str:
    from sitestack.site.modulefiles.retired import reason

    use = f"use {instead}" if instead else f"ask the site's staff to restore it (sitestack restore {r.ref})"
    return f"{reason(r)}; {use}"


def retired_kernel(site: Site, r: RetiredRecord, kdir: Path, host: StackRecord | None,
                   instead: str | None) -> KernelFiles:
    """The stub of a retired version. Its interpreter and ipykernel are those of `host`, a
    published stack (the retired one's files are gone), run isolated (-I: no PYTHONPATH, no
    user site, no current folder) with a kernel class that runs no code and reads no user
    configuration. Without any host, the kernel prints the reason and exits at start: still
    better than a missing kernel, for which JupyterLab would silently pick another."""
    from sitestack.core.records import STACK_JSON
    from sitestack.core.templates import load

    message = retired_message(r, instead)
    try:  # the kept records say which python the version had
        xy = str(json.loads((r.records / STACK_JSON).read_text(encoding="utf-8"))["python_xy"])
    except (OSError, ValueError, KeyError, TypeError):
        xy = ""
    name = f"Python {xy} ({r.ref}, retired)" if xy else f"{r.ref} (retired)"
    meta = {"kind": "retired", "stack": r.ref, "root": str(site.root.path), "message": message,
            "python": str(host.python_exe) if host else ""}
    if host is not None:
        argv = [str(host.python_exe), "-I", str(kdir / RETIRED_SCRIPT), "-f", "{connection_file}"]
        files = {RETIRED_SCRIPT: (load("sitestack.site", "retired-kernel.py").encode(), 0o644),
                 **logos(host.site_packages)}
    else:
        argv = ["/bin/sh", str(kdir / LAUNCH)]
        files = {LAUNCH: (f"#!/bin/sh\nprintf '%s\\n' {sh_quote(message)} >&2\nexit 1\n".encode(), 0o755)}
    files[KERNEL_JSON] = (kernel_json(argv, name, meta, debugger=False), 0o644)
    return KernelFiles(kdir.name, name, files)


# --- reading back -------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """A kernelspec folder as read back: nothing in it is trusted beyond its shape."""

    path: Path  # the kernel's folder
    name: str
    argv: tuple[str, ...]
    display_name: str
    meta: Mapping[str, str]  # metadata.sitestack, string values only ({} where not ours)

    @property
    def ours(self) -> bool:
        return bool(self.meta.get("kind"))


def read_spec(kdir: Path) -> Spec | None:
    """The kernelspec in `kdir`, or None where it is none (no kernel.json, not JSON, a link).

    A folder or kernel.json that is a symlink is read as nobody's: never ours, so never
    replaced or removed through it."""
    from sitestack.core.safepath import plain_file

    try:
        st = os.lstat(kdir)
        f = plain_file(kdir.parent, f"{kdir.name}/{KERNEL_JSON}", "kernelspec") \
            if stat.S_ISDIR(st.st_mode) else None
    except (OSError, ValueError):
        return None
    if f is None:
        return None
    try:
        doc = json.loads(f.read_bytes()[:1_000_000])
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    argv = doc.get("argv")
    argv = tuple(a for a in argv if isinstance(a, str)) if isinstance(argv, list) else ()
    meta_all = doc.get("metadata")
    meta = meta_all.get(META) if isinstance(meta_all, dict) else None
    meta = {k: v for k, v in meta.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(meta, dict) else {}
    dn = doc.get("display_name")
    return Spec(kdir, kdir.name, argv, dn if isinstance(dn, str) else kdir.name, meta)


def list_specs(kdirs: Path) -> list[Spec]:
    try:
        names = sorted(os.listdir(kdirs))
    except OSError:
        return []
    return [s for n in names if not n.startswith(".") and (s := read_spec(kdirs / n)) is not None]


# --- writing ------------------------------------------------------------------------------
def _unchanged(kdir: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    try:
        if stat.S_ISLNK(os.lstat(kdir).st_mode) or sorted(os.listdir(kdir)) != sorted(files):
            return False
        for name, (data, mode) in files.items():
            p = kdir / name
            if stat.S_IMODE(os.lstat(p).st_mode) & 0o111 != mode & 0o111 or p.read_bytes() != data:
                return False
    except OSError:
        return False
    return True


def publish_kernel(k: KernelFiles, kdirs: Path, scratch: Path, *, readonly: bool) -> bool:
    """Write `k` as kdirs/NAME: built in a temp folder in `scratch` (same filesystem), then
    swapped in with one rename, so Jupyter sees the old kernel or the new one, never half.
    False when it is already exactly so."""
    from sitestack.core.fsutil import make_dirs
    from sitestack.core.publish import publish, temp_tree

    dest = kdirs / k.name
    if _unchanged(dest, k.files):
        return False
    make_dirs(kdirs)
    make_dirs(scratch)
    with temp_tree(scratch, f".kernel-{k.name}-", mode=0o755 if readonly else None) as tmp:
        for name, (data, mode) in k.files.items():
            fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp / name, (mode | 0o444) & ~0o222 if readonly else mode & ~_umask())
        if readonly and os.path.isdir(dest) and not os.path.islink(dest):
            os.chmod(dest, 0o755)  # a folder moved to another parent must be writable (its '..')
        publish(tmp, dest, replace=True)  # the old folder lands at tmp and goes with it
        if readonly:
            os.chmod(dest, 0o555)
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_site_kernels(site: Site, state: dict[str, Any]) -> list[Path]:
    """Every site kernel as the records and state say now; stale ones of ours removed."""
    from sitestack.core.fsutil import rmtree

    root = site.root
    kdirs = kernels_dir(root.path)
    records = site.versions()
    wanted: dict[str, KernelFiles] = {}
    instead: dict[str, str] = {}  # NAME -> what a retired version's user should use
    for rec in records:
        vs = site.version_state(rec, state)
        on, custom = policy(rec)
        if vs.hidden or not on:
            continue
        default = site.default_version(rec.name) == rec.version
        marks = ["default"] * default + ["deprecated"] * bool(vs.deprecated)
        k = stack_kernel(site, rec, kdirs / stack_kernel_name(rec.name, rec.version), custom, marks)
        wanted[k.name] = k
        if default:
            instead[rec.name] = f"the kernel {k.display_name!r}"
    for n in {r.name for r in records} - set(instead):
        v = site.default_version(n)
        if v:
            instead[n] = f"module load {n}/{v}"
    hosts = [r for r in records if has_ipykernel(r) and r.python_exe.exists()]
    for r in site.retired():
        # The stub's interpreter: NAME's default, else its newest, else any stack with ipykernel.
        same = [h for h in hosts if h.name == r.name]
        host = next((h for h in same if site.default_version(h.name) == h.version), None) \
            or (same[-1] if same else hosts[-1] if hosts else None)
        k = retired_kernel(site, r, kdirs / stack_kernel_name(r.name, r.version), host, instead.get(r.name))
        wanted[k.name] = k
    written = []
    for name, k in wanted.items():
        existing = read_spec(kdirs / name)
        if (existing is None and os.path.lexists(kdirs / name)) or (existing and not _ours(existing, root.path)):
            print(f"sitestack: warning: {kdirs / name} was not written by sitestack; the kernel of "
                  f"{name} is not written there", file=sys.stderr)
            continue
        if publish_kernel(k, kdirs, root.tmp, readonly=True):
            written.append(kdirs / name)
    for spec in list_specs(kdirs):
        if spec.name not in wanted and _ours(spec, root.path) and spec.meta.get("kind") in ("stack", "retired"):
            rmtree(spec.path)  # a version gone, hidden, or without a kernel now: only our own
    return written


def _ours(spec: Spec, root: Path) -> bool:
    return spec.ours and spec.meta.get("root") == str(root)
