"""`sitestack clone`: a writable, relocated copy of a stack, built atomically.

The clone is assembled in a temp folder beside its final path and renamed into place
at the end, so an interrupted clone leaves nothing at PATH. Files that name the stack's
prefix (from the build's prefix-files list: shebangs, .pth, direct_url.json, text) are
always real copies, rewritten for the new prefix; everything else is shared with the
stack as the mode allows. The stack itself is only ever read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sitestack.core.copytree import (
    MODES,
    CopyCounts,
    Progress,
    Tree,
    clone_files,
    clone_tree,
    load_tree,
    probe,
    scan_tree,
)
from sitestack.core.layout import RECORDS
from sitestack.core.manifest import PrefixHit, load_prefix_files
from sitestack.core.publish import publish, temp_tree
from sitestack.core.records import MANIFEST, PREFIX_FILES, StackRecord, user_base_rel
from sitestack.core.relocate import check_target, retarget
from sitestack.errors import ConflictError, NotFoundError, UsageError
from sitestack.site.registry import Site
from sitestack.user.cloneenv import activate_script, module_paths, write_modulefiles

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
    # CPython's own sha256 where it has one: importing hashlib loads OpenSSL, 6 ms of a clone
    # (benchmarked against `cp -al`) for one digest of a path. The same digest either way.
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # 3.12+
        except ImportError:
            from hashlib import sha256
    digest = sha256(str(prefix).encode()).hexdigest()[:8]
    return user_base_rel("sitestack", "clones", f"{prefix.name}-{digest}")


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
    from sitestack.core.bytecode import pyc_paths

    return {pyc for h in hits if h.path.endswith(".py") for pyc in pyc_paths(h.path, py_xy)}


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


@dataclass(frozen=True)
class _Plan:
    """What a clone takes from the stack, decided before anything is written."""

    old_prefix: str
    hits: list[PrefixHit]  # files naming the stack's prefix: copied and rewritten
    tree: Tree
    shared: list[tuple[str, int]]  # files shared with the stack as the mode allows
    copied: list[tuple[str, int]]  # files always copied


def _plan_clone(rec: StackRecord, dest: Path) -> _Plan:
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
    must_copy = {h.path for h in hits}
    stale = _stale_pycs(hits, rec.python_xy)
    return _Plan(old_prefix, hits, tree,
                 [f for f in tree.files if f[0] not in must_copy and f[0] not in stale],
                 [f for f in tree.files if f[0] in must_copy])


def _writable_parent(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise ConflictError(f"cannot create {parent}: {ex.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConflictError(f"{parent} is not writable by you")


def clone(rec: StackRecord, dest: Path | str, *, mode: str = "auto", jobs: int | None = None,
          force: bool = False, module: str | None = None, module_dir: Path | None = None,
          progress: Progress | None = None,
          on_plan: Callable[[int, int], None] | None = None) -> CloneResult:
    """Clone `rec` to `dest`. `module` (a module name) also writes personal modulefiles."""
    t0 = time.monotonic()
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    dest = Path(os.path.abspath(os.path.expanduser(dest)))
    # stage's rule for a relocation target, before anything is made
    check_target(str(dest), "clone path", "clone to a folder without quotes, backslashes or control characters")
    _check_dest(rec, dest, force)
    mod_paths = module_paths(module or dest.name, module_dir, force) if module is not None else []
    plan = _plan_clone(rec, dest)
    if on_plan:
        on_plan(len(plan.tree.files), plan.tree.bytes)
    _writable_parent(dest.parent)
    try:
        # The temp's name carries host and pid: a later clone to this path removes the temps of
        # killed clones (kill -9) on this host, never those of live ones or of other hosts.
        with temp_tree(dest.parent, f".{dest.name}.clone-") as tmp:
            done = _build(rec, plan, tmp, dest, mode, jobs or default_jobs(), progress)
            # An earlier clone (--force) is swapped out only now, and goes with the temp.
            publish(tmp, dest, replace=True)
    except OSError as ex:
        where = f": {ex.filename}" if ex.filename else ""
        raise ConflictError(f"cloning {rec.ref} failed, nothing was left at {dest}: "
                            f"{ex.strerror or ex}{where}") from ex
    if mod_paths:
        write_modulefiles(mod_paths, dest, clone_user_base(dest), rec)
    return replace(done, seconds=time.monotonic() - t0, modulefiles=tuple(mod_paths))


def _build(rec: StackRecord, plan: _Plan, tmp: Path, dest: Path, mode: str, jobs: int,
           progress: Progress | None) -> CloneResult:
    """Fill `tmp` with the clone: files, links, relocation, bytecode, activate, record."""
    shared_files, copied_files = list(plan.shared), list(plan.copied)
    used, reasons = _choose_mode(mode, _probe_file(rec.prefix, shared_files), tmp)
    if used == "thin":
        # CPython finds its prefix from the real path of its executable: a real copy.
        exe = f"bin/python{rec.python_xy}"
        copied_files += [f for f in shared_files if f[0] == exe]
        shared_files = [f for f in shared_files if f[0] != exe]
    # The copies that get rewritten (and their bytecode) are done by one pool thread while
    # this one makes the remaining folders: their folders come first. Not for conda, whose
    # relocation reads conda-meta, linked meanwhile.
    overlap = rec.kind != "conda"
    need = _hit_dirs(copied_files, plan.hits, rec.python_xy, set(plan.tree.dirs)) if overlap else set()
    dirs = [d for d in plan.tree.dirs if d in need] + [d for d in plan.tree.dirs if d not in need]
    own: list[tuple[CopyCounts, tuple[tuple[str, ...], tuple[str, ...]], int]] = []

    def copies() -> None:
        b = clone_files(rec.prefix, tmp, copied_files, "copy", jobs=1, progress=progress)
        reloc = _relocate(rec, tmp, plan.old_prefix, str(dest), plan.hits)
        # The stack's interpreter: the very binary the clone shares (or copies), ready now.
        own.append((b, reloc, _recompile(tmp, str(dest), [h.path for h in plan.hits if h.path.endswith(".py")],
                                         rec.python_xy, str(rec.prefix / "bin" / f"python{rec.python_xy}"),
                                         rec.prefix)))

    a = clone_tree(rec.prefix, tmp, dirs, shared_files, used, jobs=jobs, progress=progress,
                   on_ready=copies if overlap else None, ready_after=len(need))
    if not overlap:
        copies()
    b, (relocated, binaries), compiled = own[0]
    if a.fallbacks:
        reasons.append(f"{a.fallbacks} file(s) could not be shared with {used} and were copied")
    for rel, target in plan.tree.links:  # links keep their targets, unless into the stack
        os.symlink(retarget(target, {plan.old_prefix: str(dest)}) or target, tmp / rel)
    user_base = "$HOME/" + clone_user_base(dest)
    (tmp / "bin" / "activate").write_text(activate_script(dest, clone_user_base(dest), rec),
                                          encoding="utf-8")
    (tmp / RECORDS).mkdir()
    # Plain writes: the whole folder is published by one rename, nothing to tear.
    (tmp / RECORDS / CLONE_RECORD).write_text(json.dumps({
        "source": rec.ref, "source_prefix": str(rec.prefix), "site": rec.site,
        "python": rec.python, "python_xy": rec.python_xy, "mode": used,
        "requested_mode": mode, "prefix": str(dest), "user_base": user_base,
        # datetime's isoformat(timespec="seconds") in UTC, without importing datetime
        "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "depends_on_stack": used == "thin",
    }, indent=2) + "\n", encoding="utf-8")
    return CloneResult(
        source=rec.ref, source_prefix=rec.prefix, prefix=dest, mode=used, requested_mode=mode,
        fallback=tuple(reasons), files=a.shared + a.copied + b.copied + compiled,
        shared=a.shared, copied=a.copied + b.copied, symlinks=len(plan.tree.links),
        bytes=a.bytes + b.bytes, relocated=relocated, binaries=binaries, seconds=0.0,
        activate=dest / "bin" / "activate", user_base=user_base, modulefiles=(),
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
        return load_tree(rec.records / MANIFEST, SKIP_TOP)
    except FileNotFoundError:
        return scan_tree(rec.prefix).without(SKIP_TOP)


def _probe_file(prefix: Path, files: Sequence[tuple[str, int]]) -> Path:
    for rel, size in files:
        if size:
            return prefix / rel
    raise UsageError(f"{prefix} has no files to clone")


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


def _hit_dirs(copied: Sequence[tuple[str, int]], hits: list[PrefixHit], py_xy: str,
              dirs: set[str]) -> set[str]:
    """The folders the rewritten copies and their bytecode go to, with every parent."""
    from sitestack.core.bytecode import pyc_paths

    need: set[str] = set()
    leaves = [rel for rel, _size in copied] + [pyc for h in hits if h.path.endswith(".py")
                                               for pyc in pyc_paths(h.path, py_xy)[:1]]
    for rel in leaves:
        d = rel.rpartition("/")[0]
        while d and d not in need:
            need.add(d)
            d = d.rpartition("/")[0]
    return need & dirs


def _recompile(tmp: Path, final: str, rels: list[str], py_xy: str, python: str,
               source: Path | None = None) -> int:
    """Bytecode for the rewritten .py files, by the interpreter the clone runs (core.bytecode).

    When the stack's own bytecode carries this interpreter's magic number, the few files are
    compiled here: the same format a run of the stack's interpreter would write, without
    starting one (a second interpreter's start-up was most of a hardlink clone's CPU time).
    Best effort: what fails is left to the import system (the clone is writable)."""
    from sitestack.core.bytecode import compile_paths, pyc_paths

    todo = [rel for rel in rels if (tmp / rel).is_file()]
    if not todo:
        return 0
    if source is not None and _same_magic(source, todo, py_xy):
        import py_compile

        for rel in todo:
            try:
                py_compile.compile(str(tmp / rel), cfile=str(tmp / pyc_paths(rel, py_xy)[0]),
                                   dfile=f"{final}/{rel}", doraise=True, optimize=0,
                                   invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
            except (py_compile.PyCompileError, OSError, ValueError):
                continue
    else:
        try:
            compile_paths(python, [str(tmp / rel) for rel in todo], strip=str(tmp), prepend=final)
        except OSError:
            return 0
    return sum(1 for rel in rels if (tmp / pyc_paths(rel, py_xy)[0]).is_file())


def _same_magic(source: Path, rels: list[str], py_xy: str) -> bool:
    """Whether the stack's bytecode (of the very files rewritten) has this interpreter's magic."""
    import importlib.util
    import sys

    from sitestack.core.bytecode import pyc_paths

    if py_xy != f"{sys.version_info[0]}.{sys.version_info[1]}":
        return False
    for rel in rels:
        try:
            with open(source / pyc_paths(rel, py_xy)[0], "rb") as f:
                return f.read(4) == importlib.util.MAGIC_NUMBER
        except OSError:
            continue
    return False


def load_clone_record(prefix: Path) -> dict[str, object] | None:
    try:
        data = json.loads((Path(prefix) / RECORDS / CLONE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
