"""`sitestack clone`: a writable, relocated copy of a stack, built atomically.

The clone is assembled in a temp folder beside its final path and renamed into place
at the end, so an interrupted clone leaves nothing at PATH. Files that name the stack's
prefix (from the build's prefix-files list: shebangs, .pth, direct_url.json, text) are
always real copies, rewritten for the new prefix; everything else is shared with the
stack as the mode allows. The stack itself is only ever read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sitestack.core.copytree import (
    MODES,
    Progress,
    Tree,
    clone_files,
    make_dirs,
    probe,
    scan_tree,
    tree_from_manifest,
)
from sitestack.core.layout import RECORDS
from sitestack.core.manifest import (
    Manifest,
    PrefixHit,
    load_prefix_files,
)
from sitestack.core.records import MANIFEST, PREFIX_FILES, StackRecord
from sitestack.errors import ConflictError, NotFoundError, UsageError
from sitestack.site.registry import Site

CLONE_RECORD = "clone.json"
# Top-level entries of a stack that a clone does not take: the stack's records (the clone
# gets its own) and pip.conf, which sends installs to the user base (a clone is writable).
SKIP_TOP = (RECORDS, "pip.conf")


@dataclass(frozen=True)
class CloneResult:
    source: str
    source_prefix: Path
    prefix: Path
    mode: str
    requested_mode: str
    fallback: tuple[str, ...]  # why faster modes were not used (auto) or files copied instead
    files: int
    shared: int
    copied: int
    symlinks: int
    bytes: int
    relocated: tuple[str, ...]
    binaries: tuple[str, ...]  # embed the stack's prefix but could not be rewritten
    seconds: float
    activate: Path
    user_base: str  # with a literal $HOME
    modulefiles: tuple[Path, ...]

    def to_json(self) -> dict[str, object]:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items()} | {"modulefiles": [str(p) for p in self.modulefiles]}


def resolve_source(site: Site | None, ref: str | None, env: dict[str, str] | None = None) -> StackRecord:
    """NAME[/VERSION] from the site root, else the loaded stack ($SITESTACK_PREFIX)."""
    if ref:
        if site is None:
            raise UsageError("a site root is needed to find a stack by name")
        return site.get(ref)
    env = dict(os.environ) if env is None else env
    loaded = env.get("SITESTACK_PREFIX")
    if not loaded:
        raise UsageError("no stack given and none loaded ($SITESTACK_PREFIX is unset)",
                         hint="give NAME[/VERSION], or `module load` a stack first")
    rec = Site.from_prefix(Path(loaded))
    if rec is None:
        raise NotFoundError(f"$SITESTACK_PREFIX={loaded} is not a sitestack stack")
    return rec


def clone_user_base(prefix: Path) -> str:
    """The clone's own PYTHONUSERBASE, relative to $HOME, distinct for every clone path."""
    digest = hashlib.sha256(str(prefix).encode()).hexdigest()[:8]
    return f".local/sitestack/clones/{prefix.name}-{digest}"


def default_jobs() -> int:
    # Local disks gain little from more threads than cores (the GIL serialises the
    # Python part); network filesystems gain from many more: --jobs 16..32.
    return max(1, min(8, os.cpu_count() or 1))


def _check_dest(rec: StackRecord, dest: Path, force: bool) -> None:
    src = Path(os.path.realpath(rec.prefix))
    real = Path(os.path.realpath(dest))
    if real == src or src in real.parents or real in src.parents:
        raise UsageError(f"{dest} overlaps the stack at {rec.prefix}; clone somewhere else")
    if not os.path.lexists(dest):
        return
    if not force:
        raise ConflictError(f"{dest} already exists", hint="use --force to replace an earlier clone")
    # --force replaces only what a clone may replace: an earlier clone, an empty folder.
    if dest.is_dir() and not dest.is_symlink():
        if (dest / RECORDS / CLONE_RECORD).is_file() or not any(dest.iterdir()):
            return
        raise ConflictError(f"{dest} exists and is not a sitestack clone; --force replaces only "
                            "an earlier clone or an empty folder")
    raise ConflictError(f"{dest} exists and is not a folder; remove it yourself")


def _stale_pycs(hits: list[PrefixHit], py_xy: str) -> set[str]:
    """Bytecode of .py files that get rewritten: compiled from the old text, so not taken."""
    tag = "cpython-" + py_xy.replace(".", "")
    out = set()
    for h in hits:
        if h.path.endswith(".py"):
            d, name = os.path.split(h.path)
            base = os.path.join(d, "__pycache__", f"{name[:-3]}.{tag}")
            out |= {f"{base}.pyc", f"{base}.opt-1.pyc", f"{base}.opt-2.pyc"}
    return out


def _choose_mode(requested: str, probe_file: Path, scratch: Path) -> tuple[str, list[str]]:
    if requested in ("copy", "thin"):
        return requested, []
    if requested != "auto":
        why = probe(requested, probe_file, scratch)
        if why:
            raise UsageError(f"cannot clone with --mode {requested}: {why}",
                             hint="use --mode auto (picks what works) or --mode copy")
        return requested, []
    reasons: list[str] = []
    for mode in ("reflink", "hardlink"):
        why = probe(mode, probe_file, scratch)
        if why is None:
            return mode, reasons
        reasons.append(f"{mode} not possible: {why}")
    return "copy", reasons


def clone(rec: StackRecord, dest: Path | str, *, mode: str = "auto", jobs: int | None = None,
          force: bool = False, module: str | None = None, module_dir: Path | None = None,
          progress: Progress | None = None,
          on_plan: Callable[[int, int], None] | None = None) -> CloneResult:
    """Clone `rec` to `dest`. `module` (a module name) also writes personal modulefiles."""
    from sitestack.core.fsutil import rmtree

    t0 = time.monotonic()
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    dest = Path(os.path.abspath(os.path.expanduser(dest)))
    _check_dest(rec, dest, force)
    mod_paths: list[Path] = []
    if module is not None:
        mod_paths = _module_paths(module or dest.name, module_dir, force)
    old_prefix, hits = _prefix_files(rec)
    if rec.kind == "conda":
        from sitestack.conda.prefix import check_new_prefix, conda_relocation

        reloc = conda_relocation(rec.prefix)
        check_new_prefix(rec.prefix, str(dest), reloc)  # before anything is written
        # conda-meta knows every file with a placeholder: copy those too, never link them.
        known = {h.path for h in hits}
        hits = hits + [PrefixHit(p, "text") for p in reloc.text_files if p not in known] + [
            PrefixHit(p, "binary") for p in reloc.binary_files if p not in known]
    tree = _plan(rec)
    if on_plan:
        on_plan(len(tree.files), tree.bytes)
    must_copy = {h.path for h in hits}
    exe = f"bin/python{rec.python_xy}"
    stale = _stale_pycs(hits, rec.python_xy)
    shared_files = [f for f in tree.files if f[0] not in must_copy and f[0] not in stale]
    copied_files = [f for f in tree.files if f[0] in must_copy]
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise ConflictError(f"cannot create {parent}: {ex.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConflictError(f"{parent} is not writable by you")
    _clear_stale_temps(parent, dest.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.clone-{_HOST}-{os.getpid()}-", dir=parent))
    try:
        os.chmod(tmp, 0o755)
        probe_file = _probe_file(rec.prefix, shared_files)
        used, reasons = _choose_mode(mode, probe_file, tmp)
        if used == "thin":
            # CPython finds its prefix from the real path of its executable: a real copy.
            copied_files += [f for f in shared_files if f[0] == exe]
            shared_files = [f for f in shared_files if f[0] != exe]
        make_dirs(tmp, tree.dirs)
        j = jobs or default_jobs()
        a = clone_files(rec.prefix, tmp, shared_files, used, jobs=j, progress=progress)
        b = clone_files(rec.prefix, tmp, copied_files, "copy", jobs=j, progress=progress)
        if a.fallbacks:
            reasons.append(f"{a.fallbacks} file(s) could not be shared with {used} and were copied")
        _symlinks(tree, tmp, old_prefix, str(dest))
        relocated, binaries = _relocate(rec, tmp, old_prefix, str(dest), hits)
        compiled = _recompile(tmp, str(dest), [h.path for h in hits if h.path.endswith(".py")],
                              rec.python_xy)
        user_base = "$HOME/" + clone_user_base(dest)
        act = tmp / "bin" / "activate"
        act.write_text(activate_script(dest, clone_user_base(dest), rec), encoding="utf-8")
        (tmp / RECORDS).mkdir()
        # Plain writes: the whole folder is published by one rename, nothing to tear.
        (tmp / RECORDS / CLONE_RECORD).write_text(json.dumps({
            "source": rec.ref, "source_prefix": str(rec.prefix), "site": rec.site,
            "python": rec.python, "python_xy": rec.python_xy, "mode": used,
            "requested_mode": mode, "prefix": str(dest), "user_base": user_base,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "depends_on_stack": used == "thin",
        }, indent=2) + "\n", encoding="utf-8")
        _publish(tmp, dest)
    except OSError as ex:
        rmtree(tmp)
        where = f": {ex.filename}" if ex.filename else ""
        raise ConflictError(f"cloning {rec.ref} failed, nothing was left at {dest}: "
                            f"{ex.strerror or ex}{where}") from ex
    except BaseException:
        rmtree(tmp)
        raise
    if mod_paths:
        write_modulefiles(mod_paths, dest, clone_user_base(dest), rec)
    return CloneResult(
        source=rec.ref, source_prefix=rec.prefix, prefix=dest, mode=used, requested_mode=mode,
        fallback=tuple(reasons), files=a.shared + a.copied + b.copied + compiled,
        shared=a.shared, copied=a.copied + b.copied, symlinks=len(tree.links), bytes=a.bytes + b.bytes,
        relocated=relocated, binaries=binaries, seconds=time.monotonic() - t0,
        activate=dest / "bin" / "activate", user_base=user_base, modulefiles=tuple(mod_paths),
    )


def _prefix_files(rec: StackRecord) -> tuple[str, list[PrefixHit]]:
    """The build's list of files naming the prefix; a stack without one is read in full."""
    try:
        return load_prefix_files(rec.records / PREFIX_FILES)
    except FileNotFoundError:
        from sitestack.core.manifest import scan

        _m, hits = scan(rec.prefix, [str(rec.prefix)])
        return str(rec.prefix), hits


def _plan(rec: StackRecord) -> Tree:
    """What to clone: the stack's manifest (the stack as built; no walk), else a walk."""
    try:
        tree = tree_from_manifest(Manifest.load(rec.records / MANIFEST))
    except FileNotFoundError:
        tree = scan_tree(rec.prefix)
    return tree.without(SKIP_TOP)


def _probe_file(prefix: Path, files: Sequence[tuple[str, int]]) -> Path:
    for rel, size in files:
        if size:
            return prefix / rel
    raise UsageError(f"{prefix} has no files to clone")


def _symlinks(tree: Tree, tmp: Path, old: str, new: str) -> None:
    """Links keep their targets; absolute ones into the stack point into the clone."""
    for rel, target in tree.links:
        if target == old or target.startswith(old + "/"):
            target = new + target[len(old):]
        os.symlink(target, tmp / rel)


def _relocate(rec: StackRecord, tmp: Path, old: str, new: str,
              hits: list[PrefixHit]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if rec.kind == "conda":
        from sitestack.conda.prefix import relocate_conda

        changed = relocate_conda(tmp, old, new)
        left = tuple(h.path for h in hits if h.kind == "binary" and h.path not in set(changed))
        return tuple(changed), left
    from sitestack.core.relocate import relocate

    r = relocate(tmp, old, new, hits)
    return r.rewritten, r.binaries


def _recompile(tmp: Path, final: str, rels: list[str], py_xy: str) -> int:
    """Bytecode for rewritten .py files, when our interpreter makes the same bytecode."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != py_xy or sys.implementation.name != "cpython":
        return 0  # the clone's python writes it on first import (the clone is writable)
    import importlib.util
    import py_compile

    done = 0
    for rel in rels:
        src = tmp / rel
        if src.is_file():
            try:
                py_compile.compile(str(src), cfile=importlib.util.cache_from_source(str(src)),
                                   dfile=f"{final}/{rel}", doraise=True)
                done += 1
            except (py_compile.PyCompileError, OSError):
                pass  # left to the import system
    return done


_HOST = socket.gethostname().replace("-", "_")


def _clear_stale_temps(parent: Path, name: str) -> None:
    """Remove temp folders of clones to this path killed (kill -9) on this host.

    The name carries host and pid; a folder whose process is gone is garbage. Folders of
    live processes, and of other hosts (a shared home), are left alone.
    """
    from sitestack.core.fsutil import rmtree

    for d in parent.glob(f".{name}.clone-{_HOST}-*-*"):
        try:
            pid = int(d.name[len(f".{name}.clone-{_HOST}-"):].split("-", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            rmtree(d)
        except PermissionError:
            pass  # alive, another user's


def _publish(tmp: Path, dest: Path) -> None:
    """Rename the finished clone into place; an earlier clone (--force) goes only after."""
    from sitestack.core.fsutil import rmtree

    aside = None
    if os.path.lexists(dest):
        aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, aside / "old")
    os.rename(tmp, dest)
    if aside is not None:
        rmtree(aside)


def _module_paths(name: str, module_dir: Path | None, force: bool) -> list[Path]:
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise UsageError(f"--module {name!r} is not a module name")
    base = Path(os.path.expanduser(str(module_dir) if module_dir else "~/privatemodules"))
    paths = [base / f"{name}.lua", base / name]
    if not force:
        for p in paths:
            if os.path.lexists(p):
                raise ConflictError(f"modulefile {p} already exists", hint="use --force to replace it")
    return paths


def load_clone_record(prefix: Path) -> dict[str, object] | None:
    try:
        data = json.loads((Path(prefix) / RECORDS / CLONE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- activation ---------------------------------------------------------------------

def _env_plan(prefix: Path, user_base_rel: str, rec: StackRecord) -> list[tuple[str, str]]:
    """(VAR, shell expression) set on activation; each is restored on deactivate."""
    p = shlex.quote(str(prefix))
    ub = '"$HOME"/' + shlex.quote(user_base_rel)
    out = [("PATH", f'{ub}/bin:{p}/bin:"$PATH"'), ("PYTHONUSERBASE", ub),
           ("SITESTACK_CLONE", p)]
    if rec.kind == "conda":
        out.append(("CONDA_PREFIX", p))
    return out


def activate_script(prefix: Path, user_base_rel: str, rec: StackRecord) -> str:
    """A POSIX-sh activate (bash, zsh, dash) that deactivate undoes exactly."""
    plan = _env_plan(prefix, user_base_rel, rec)
    restore = []
    for var, _ in plan:
        restore += [
            f'        if [ -n "${{_SITESTACK_OLD_{var}+x}}" ]; then',
            f'            {var}="$_SITESTACK_OLD_{var}"; export {var}; unset _SITESTACK_OLD_{var}',
            f"        else unset {var}; fi",
        ]
    save = []
    for var, value in plan:
        save += [f'if [ -n "${{{var}+x}}" ]; then _SITESTACK_OLD_{var}="${var}"; fi',
                 f"{var}={value}; export {var}"]
    name = shlex.quote(f"({prefix.name}) ")
    return "\n".join([
        f"# Written by sitestack clone: a clone of {rec.ref} at {prefix}.",
        "# Use it with `source bin/activate` (bash, zsh, dash); `deactivate` undoes it.",
        "# The clone gets its own PYTHONUSERBASE, so `pip install --user` never mixes with",
        "# the stack's user base.",
        "deactivate () {",
        '    if [ -n "${_SITESTACK_CLONE_ACTIVE:-}" ]; then',
        *restore,
        '        if [ -n "${_SITESTACK_OLD_PS1+x}" ]; then PS1="$_SITESTACK_OLD_PS1"; unset _SITESTACK_OLD_PS1; fi',
        "        unset _SITESTACK_CLONE_ACTIVE",
        "        hash -r 2>/dev/null || true",
        "    fi",
        '    if [ "${1:-}" != nondestructive ]; then unset -f deactivate; fi',
        "}",
        "deactivate nondestructive",
        *save,
        "_SITESTACK_CLONE_ACTIVE=1",
        'if [ -n "${PS1+x}" ] && [ -z "${VIRTUAL_ENV_DISABLE_PROMPT:-}" ]; then',
        f'    _SITESTACK_OLD_PS1="$PS1"; PS1={name}"$PS1"',
        "fi",
        "hash -r 2>/dev/null || true",
        "",
    ])


def write_modulefiles(paths: list[Path], prefix: Path, user_base_rel: str, rec: StackRecord) -> None:
    """A personal Lmod (.lua) and Tcl modulefile for the clone; unload undoes load."""
    from sitestack.core.fsutil import atomic_write_text
    from sitestack.site.modulefiles import lmod, tcl

    lua_path, tcl_path = paths
    ub_parts = user_base_rel.split("/")
    what = f"Clone of {rec.ref} (Python {rec.python}) at {prefix}"
    lua = [
        "-- Written by sitestack clone --module.",
        f"help({lmod.q(what)})",
        f"whatis({lmod.q(what)})",
        f"local prefix = {lmod.q(str(prefix))}",
        'local home = os.getenv("HOME") or ""',
        f"local userbase = pathJoin(home, {', '.join(lmod.q(x) for x in ub_parts)})",
        'prepend_path("PATH", pathJoin(prefix, "bin"))',
        'pushenv("PYTHONUSERBASE", userbase)',
        'prepend_path("PATH", pathJoin(userbase, "bin"))',
        'pushenv("SITESTACK_CLONE", prefix)',
    ]
    tcl_lines = [
        "#%Module1.0",
        "# Written by sitestack clone --module.",
        "proc ModulesHelp { } {", f"    puts stderr {tcl.q(what)}", "}",
        f"module-whatis {tcl.q(what)}",
        f"set prefix {tcl.q(str(prefix))}",
        f"set userbase [file join [getenv HOME] {' '.join(tcl.q(x) for x in ub_parts)}]",
        "prepend-path PATH [file join $prefix bin]",
        "pushenv PYTHONUSERBASE $userbase",
        "prepend-path PATH [file join $userbase bin]",
        "pushenv SITESTACK_CLONE $prefix",
    ]
    if rec.kind == "conda":
        lua.append('pushenv("CONDA_PREFIX", prefix)')
        tcl_lines.append("pushenv CONDA_PREFIX $prefix")
    atomic_write_text(lua_path, "\n".join(lua) + "\n")
    atomic_write_text(tcl_path, "\n".join(tcl_lines) + "\n")
