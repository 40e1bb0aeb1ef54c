"""build -> smoke test -> atomic, read-only publish.

Everything happens in ROOT/.sitestack/tmp/<name>-<version>-XXXX (same filesystem as
ROOT/stacks), and the finished prefix is renamed into place in one step. Until that
rename nothing is visible; a failed build removes its temp folder, a kill -9 leaves
only a temp folder that the next build of the name removes.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sitestack import __version__
from sitestack.build.interpreter import find_python
from sitestack.build.packages import Installed, copy_and_install, install_packages
from sitestack.build.smoke import last_durations, run_smoke_tests
from sitestack.core import records
from sitestack.core.copytree import save_tree
from sitestack.core.fsutil import (
    atomic_write_json,
    atomic_write_text,
    file_lock,
    is_writable_dir,
    make_dirs,
    make_readonly,
    make_readonly_from,
    readonly_mode,
    rmtree,
)
from sitestack.core.layout import SiteRoot, records_dir
from sitestack.core.log import BuildLog
from sitestack.core.manifest import (
    FileEntry,
    Manifest,
    PrefixHit,
    hash_files,
    refresh,
    save_prefix_files,
)
from sitestack.core.progress import Progress
from sitestack.core.publish import clear_stale, make_temp, publish
from sitestack.core.relocate import relink, relocate
from sitestack.errors import BuildError, ConflictError, UsageError
from sitestack.site.spec import StackSpec, check_name

Log = Callable[[str], None]

PIP_CONF = """\
# Written by sitestack. This stack is read-only: a bare `pip install` goes to your
# per-version user base ($PYTHONUSERBASE) instead. For more, use `sitestack venv`.
[install]
user = true
"""


@dataclass(frozen=True)
class BuildResult:
    name: str
    version: str
    prefix: Path
    python: str
    packages: dict[str, str]
    files: int
    bytes: int
    seconds: float
    default: bool


def today() -> str:
    return _dt.date.today().isoformat()


def _check_root(root: SiteRoot) -> None:
    if not is_writable_dir(root.path):
        raise UsageError(f"site root {root.path} is not writable by this user")
    if root.path.exists() and not root.path.is_dir():
        raise UsageError(f"site root {root.path} is not a folder")


def build(
    spec: StackSpec,
    root: SiteRoot,
    *,
    version: str | None = None,
    make_default: bool = False,
    log: BuildLog | None = None,
    lock_timeout: float = -1,
    from_lock: Path | None = None,
    expect_packages: dict[str, str] | None = None,
) -> BuildResult:
    """Build `spec` into ROOT/stacks/NAME/VERSION. `from_lock` rebuilds an exact set:
    a conda lock (rattler/pixi format) for conda stacks, a lock.txt for PyPI stacks.
    `expect_packages` (restore) refuses to publish any other set than that one."""
    log = log or BuildLog()
    t0 = time.monotonic()
    version = check_name(version or today(), "--version")
    _check_root(root)
    if from_lock is not None and spec.conda is None:
        spec = _pin_to_lock(spec, Path(from_lock))
    if spec.conda is None:
        source = find_python(spec.python)  # before anything is written: a bad python is bad input
    final = root.prefix(spec.name, version)
    make_dirs(root.tmp)  # ROOT, .sitestack, tmp: 0755 whatever the caller's umask
    # The sitestack (and conda front door) the modulefiles put on users' PATH (reused if current).
    from sitestack.build.sitetool import ensure_tool

    ensure_tool(root, log)
    with file_lock(root.lock_for(spec.name), timeout=lock_timeout, what=f"stack {spec.name}"):
        if final.exists():
            raise ConflictError(
                f"{spec.name}/{version} is already published at {final}; published versions "
                "are never overwritten (choose another --version)"
            )
        # We hold the name's lock: a temp folder of this name is from a killed build.
        clear_stale(root.tmp, f"{spec.name}-", locked=True)
        tmp = make_temp(root.tmp, f"{spec.name}-{version}-")  # 0755: a site stack is for everyone
        try:
            installed = Installed()
            if spec.conda is not None:
                python, py_xy, extra, packages = _build_conda(spec, tmp, final, root, log, from_lock)
            else:
                python, py_xy, extra = source.version, source.xy, {}
                packages = copy_and_install(spec, source, tmp, final, root, log, installed)
            if expect_packages is not None and packages != expect_packages:
                diff = sorted(set(packages.items()) ^ set(expect_packages.items()))
                raise BuildError(f"the rebuilt set differs from the lock ({diff[:5]}); nothing was published")
            extra = {**extra, "jupyter": _jupyter(spec, tmp, py_xy)}
            finish(spec, tmp, final, root, version, python, py_xy, packages,
                   lambda: run_smoke_tests(spec, tmp, py_xy, log, scratch=(root.tmp, f"{spec.name}-smoke-"),
                                           expected=last_durations(root, spec.name)),
                   log, extra, installed)
            log.step(f"publishing {final}")
            make_dirs(final.parent)
            publish(tmp, final, durable=True)
        except BaseException:
            rmtree(tmp)
            raise
    from sitestack.site.registry import Site

    site = Site(root)
    # update_state also rewrites the modulefiles and the configured catalog (site.catalog).
    site.update_state(spec.name, lambda s: s.update(default=version) if make_default or not s["default"] else None)
    rec = site.get(f"{spec.name}/{version}")
    log.step(f"wrote modulefiles under {root.lmod_dir} and {root.tcl_dir}")
    return BuildResult(
        name=spec.name, version=version, prefix=final, python=python, packages=packages,
        files=rec.files, bytes=rec.bytes, seconds=time.monotonic() - t0,
        default=site.default_version(spec.name) == version,
    )


def _jupyter(spec: StackSpec, prefix: Path, py_xy: str) -> dict[str, object]:
    """The [jupyter] table for the records; `kernel = true` needs ipykernel in the stack."""
    from sitestack.core.dists import python_dists
    from sitestack.errors import SpecError

    if spec.jupyter.kernel and "ipykernel" not in python_dists(prefix, py_xy):
        raise SpecError("jupyter.kernel", "is true, but the stack has no ipykernel: add ipykernel to "
                        "[packages] requirements, or set kernel = false; nothing was published")
    return spec.jupyter.to_json()


def _pin_to_lock(spec: StackSpec, lock: Path) -> StackSpec:
    """A PyPI stack rebuilt from a lock.txt installs exactly those name==version pins."""
    from dataclasses import replace

    try:
        pins = [ln.strip() for ln in lock.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    except OSError as e:
        raise UsageError(f"cannot read lock file {lock}: {e}") from None
    if not all("==" in p for p in pins):
        raise UsageError(f"{lock} is not a lock.txt of name==version lines")
    return replace(spec, packages=replace(spec.packages, requirements=tuple(pins)))


def _build_conda(
    spec: StackSpec, tmp: Path, final: Path, root: SiteRoot, log: BuildLog, from_lock: Path | None,
) -> tuple[str, str, dict[str, object], dict[str, str]]:
    """conda packages by rattler, then the [packages] PyPI layer by uv, never over conda's files."""
    from dataclasses import replace

    from sitestack.conda import install as conda
    from sitestack.conda import lock as condalock
    from sitestack.conda import prefix as condaprefix

    python, py_xy, extra = conda.build_conda_prefix(spec, tmp, final, root, log, from_lock=from_lock)
    info = extra["conda"]
    assert isinstance(info, dict)
    from sitestack.conda.shellhook import wire  # real conda, where the packages carry it

    shell, left_out = wire(tmp, final, info["channels"], info["specs"],
                           [f"{r['channel']}::{r['name']}-{r['version']}-{r['build']}" for r in info["packages"]])
    if shell is not None:
        extra["conda_shell"] = shell
        log.add("".join(f"etc/profile.d/conda.sh: left out of the modulefiles: {line}\n" for line in left_out))
    if from_lock is not None:
        pins = condalock.read_lock(Path(from_lock))[1]
        spec = replace(spec, packages=replace(spec.packages, requirements=tuple(f"{n}=={v}" for n, v in sorted(pins.items()))))
    conflicts = conda.pypi_conflicts(spec.packages.requirements, info["python_dists"])
    if conflicts:
        raise BuildError("PyPI requirements conflict with what conda packages provide:\n  " + "\n  ".join(conflicts))
    provides = set(extra.get("conda_provides", []))  # type: ignore[call-overload]
    snap = condaprefix.snapshot_conda_files(tmp)
    packages = install_packages(spec, tmp, py_xy, log, skip=provides)
    condaprefix.check_conda_files(tmp, snap)  # uv must never have written over a conda file
    condalock.add_pypi_to_lock(records_dir(tmp) / conda.LOCK_NAME, packages, provides=provides)
    return python, py_xy, extra, packages


def finish(
    spec: StackSpec, tmp: Path, final: Path, root: SiteRoot, version: str, python: str,
    py_xy: str, packages: dict[str, str], smoke: Callable[[], list[dict[str, object]]], log: BuildLog,
    extra: dict[str, object], installed: Installed | None = None,
) -> None:
    """Smoke-test while hashing, relocate to the final path, compile bytecode, write records
    and manifest, lock down."""
    installed = installed or Installed()
    # One read of every byte that did not come from the site cache (whose hashes are kept
    # with each entry) or the interpreter's copy: hash it, and find files that name the temp
    # or the final prefix, while the smoke tests run. Without the cache that is every byte,
    # found by a walk; with it, the few files the install wrote itself (scripts the link
    # rewrote, the interpreter's rewritten files), which it names: no walk of 70,000 files
    # beside the tests, which take both cores.
    hash_beside = not installed.known
    log.step("running smoke tests" + (" while hashing every file" if hash_beside else ""))
    manifest = Manifest(files=dict(installed.known))
    needles = [str(tmp), str(final)]
    t_smoke = time.time_ns() - 2_000_000_000  # the same clock margin as t_scan below
    with ThreadPoolExecutor(max_workers=1) as pool:
        tests = pool.submit(smoke)
        with Progress(log, "hashed", unit="bytes") as bar:
            if hash_beside:
                hits = refresh(tmp, manifest, installed.since_ns, needles, progress=bar.advance)
            else:
                hits = _hash_into(tmp, manifest, installed.written, needles, progress=bar.advance)
        results = tests.result()  # a failed smoke test raises here: nothing is published
    log.add(f"{len(installed.known)} file(s) linked from the site cache were not read again")
    # File times come from a coarse kernel clock that can lag time_ns() by a tick: a margin
    # makes sure every later write counts as "since"; at worst a few files are read twice.
    since = min(t_smoke, installed.since_ns) if installed.known else t_smoke
    rel = relocate(tmp, str(tmp), str(final), hits)
    log.step("compiling bytecode for every module")
    compile_bytecode(tmp, final, py_xy, log, skip_site_packages=installed.site_packages_compiled)
    log.step("writing records")
    _layer_pip(tmp, py_xy, manifest)  # after compiling, so its bytecode is linked, not compiled twice
    atomic_write_text(tmp / "pip.conf", PIP_CONF)
    # One walk reads again what changed since the tests began: what a test command wrote into
    # the prefix (a .pth, a generated cache), the relocated files, new .pyc, the pip copy (and
    # with the cache what changed since the link). It takes every mode for the lock-down too.
    modes: dict[str, int] = {}
    again = refresh(tmp, manifest, since, needles, modes=modes)
    late = relocate(tmp, str(tmp), str(final), again)
    if late.rewritten:  # files a test wrote naming the temp folder: relocated, compiled, read again
        log.add("written by the smoke tests, naming the build folder (relocated): " + ", ".join(late.rewritten))
        py = [str(tmp / f) for f in late.rewritten if f.endswith(".py")]
        if py:
            from sitestack.core.bytecode import compile_paths

            r = compile_paths(str(tmp / "bin" / f"python{py_xy}"), py, strip=str(tmp), prepend=str(final))
            log.add(r.stdout + r.stderr)
        modes.clear()
        again = refresh(tmp, manifest, since, needles, modes=modes)
    for link in relink(tmp, {str(tmp): str(final)}, manifest.symlinks):  # the links the walk saw
        manifest.symlinks[link] = os.readlink(tmp / link)
    binaries = set(rel.binaries) | set(late.binaries)
    if binaries:
        log.add("binaries naming the build folder (left as is): " + ", ".join(sorted(binaries)))
    reread = {h.path for h in again}
    hits = [h for h in hits if h.path not in reread] + again
    prefix_hits = [h for h in hits if h.path in manifest.files and h.path not in binaries]

    rec_dir = records_dir(tmp)
    rec_dir.mkdir(exist_ok=True)
    manifest.save(rec_dir / records.MANIFEST)
    save_tree(rec_dir / records.TREE, rec_dir / records.MANIFEST, manifest)
    save_prefix_files(rec_dir / records.PREFIX_FILES, str(final), prefix_hits)
    atomic_write_text(rec_dir / records.SPEC, spec.text)
    atomic_write_text(rec_dir / records.LOCK, records.lock_text(packages))
    atomic_write_json(rec_dir / records.TESTS, results)
    m = spec.module
    atomic_write_json(rec_dir / records.STACK_JSON, records.stack_json(
        name=spec.name, version=version, site=spec.site, description=spec.description,
        kind="conda" if spec.conda else "pypi", python=python, python_xy=py_xy,
        prefix=final, root=root.path, tool_version=__version__,
        built=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        packages=packages, files=len(manifest.files), bytes_=manifest.total_bytes,
        module={"depends_on": list(m.depends_on), "family": m.family, "setenv": dict(m.setenv),
                "prepend_path": {k: list(v) for k, v in m.prepend_path.items()}, "help": m.help},
        extra=extra, user=spec.user, requested=requested_names(spec),
    ))
    atomic_write_text(rec_dir / records.BUILD_LOG, log.text())
    log.step("making the stack read-only")
    make_readonly_from(tmp, modes)  # nothing but the records was written since the walk
    make_readonly(rec_dir)
    os.chmod(tmp, readonly_mode(os.lstat(tmp).st_mode, is_dir=True))


def _hash_into(root: Path, manifest: Manifest, rels: Sequence[str], needles: list[str],
               progress: Callable[[int], None] | None = None) -> list[PrefixHit]:
    """Hash the files `rels` under `root` into `manifest`; their prefix hits (any of `needles`)."""
    hits = []
    for rel, (digest, size, mode, hit) in hash_files(root, list(rels), tuple(n.encode() for n in needles),
                                                     progress=progress):
        manifest.files[rel] = FileEntry(digest, size, mode)
        if hit:
            hits.append(PrefixHit(rel, hit))
    return hits


def requested_names(spec: StackSpec) -> list[str]:
    """The spec's own requirements by canonical name, in its order, conda packages first."""
    import re

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    names: list[str] = []
    for c in spec.conda.packages if spec.conda else ():
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", c.split("::")[-1])
        if m:
            names.append(canonicalize_name(m.group(1)))
    for r in spec.packages.requirements:
        try:
            names.append(canonicalize_name(Requirement(r).name))
        except InvalidRequirement:
            continue
    return list(dict.fromkeys(names))


def _layer_pip(prefix: Path, py_xy: str, manifest: Manifest | None = None) -> None:
    """Keep a dist-info-less copy of pip that layers can run even with inheritance off.

    Hardlinks of pip's own files (the stack is read-only: they never change apart), so the
    .pyc stay valid and `manifest` gets their known hashes instead of a read of each file;
    a file changed since it was hashed has a new mtime, and finish() reads it again."""
    sp_rel = f"lib/python{py_xy}/site-packages/pip"
    src = prefix / sp_rel
    if not src.is_dir():
        return
    dest = prefix / "lib" / "sitestack-pip" / "pip"
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        out = os.path.normpath(os.path.join(dest, rel_dir))
        os.makedirs(out, exist_ok=True)
        for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            a, b = os.path.join(dirpath, name), os.path.join(out, name)
            if os.path.islink(a):
                os.symlink(os.readlink(a), b)
                continue
            try:
                os.link(a, b)
            except OSError:
                shutil.copy2(a, b)  # copy2 keeps mtimes: the copied .pyc stay valid
            if manifest is not None:
                rel = os.path.normpath(os.path.join(sp_rel, rel_dir, name))
                if rel in manifest.files:
                    manifest.files[os.path.relpath(b, prefix)] = manifest.files[rel]


def compile_bytecode(prefix: Path, final: Path, py_xy: str, log: BuildLog, *,
                     skip_site_packages: bool = False) -> None:
    """Compile every .py (stdlib too): a read-only prefix can never cache bytecode later.

    Files linked from the site cache were compiled there: with `skip_site_packages` their
    .pyc are not checked again, and of the stdlib (copied with its .pyc, mtimes kept) only
    the sources without a valid .pyc are compiled: one header read per file in this process
    instead of a compileall pool walking every folder."""
    from sitestack.core.bytecode import compile_dirs, compile_paths

    py = str(prefix / "bin" / f"python{py_xy}")
    lib = prefix / "lib" / f"python{py_xy}"
    if not skip_site_packages:
        with Progress(log, "compiled", noun="files") as bar:  # a live count of N on a terminal
            compile_dirs(py, [str(lib)], log, strip=str(prefix), prepend=str(final), progress=bar)
        return
    todo = _without_valid_pyc(lib, py_xy, skip=lib / "site-packages")
    if todo:
        with Progress(log, "compiled", noun="files") as bar:
            r = compile_paths(py, todo, strip=str(prefix), prepend=str(final), progress=bar)
        log.add(r.stdout + r.stderr)
    log.add(f"compiled {len(todo)} stdlib file(s) without valid bytecode; the rest were valid")


def _without_valid_pyc(lib: Path, py_xy: str, skip: Path) -> list[str]:
    """Sources whose timestamp .pyc is missing or does not match their mtime and size."""
    import struct

    from sitestack.core.bytecode import pyc_paths

    todo: list[str] = []
    for dirpath, dirnames, filenames in os.walk(lib):
        if dirpath == str(skip):
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and os.path.join(dirpath, d) != str(skip)]
        for f in filenames:
            if not f.endswith(".py"):
                continue
            src = os.path.join(dirpath, f)
            pyc = os.path.join(dirpath, pyc_paths(f, py_xy)[0])
            try:
                st = os.stat(src)
                with open(pyc, "rb") as fh:
                    head = fh.read(16)
                flags, mtime, size = struct.unpack("<III", head[4:16])
                if flags != 0 or mtime != int(st.st_mtime) & 0xFFFFFFFF or size != st.st_size & 0xFFFFFFFF:
                    todo.append(src)
            except (OSError, struct.error):
                todo.append(src)
    return todo
