"""build -> smoke test -> atomic, read-only publish.

Everything happens in ROOT/.sitestack/tmp/<name>-<version>-XXXX (same filesystem as
ROOT/stacks), and the finished prefix is renamed into place in one step. Until that
rename nothing is visible; a failed build removes its temp folder, a kill -9 leaves
only a temp folder that the next build of the name removes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sitestack import __version__
from sitestack.build.interpreter import SourcePython, copy_interpreter, find_python
from sitestack.build.smoke import run_smoke_tests
from sitestack.core import records
from sitestack.core.fsutil import (
    atomic_write_json,
    atomic_write_text,
    file_lock,
    is_writable_dir,
    make_dirs,
    make_readonly,
    rmtree,
    shared_lock,
)
from sitestack.core.layout import SiteRoot, records_dir
from sitestack.core.log import BuildLog
from sitestack.core.manifest import FileEntry, Manifest, refresh, save_prefix_files
from sitestack.core.progress import Progress
from sitestack.core.publish import clear_stale, make_temp, publish
from sitestack.core.relocate import relink, relocate
from sitestack.core.uvtool import index_args, run_logged, uv_bin, uv_env
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


@dataclass
class Installed:
    """What install_packages leaves for the later steps."""

    # Files hardlinked from the site cache, with the hashes recorded there: not read again.
    known: dict[str, FileEntry] = field(default_factory=dict)
    # Every file in site-packages came compiled from the cache: no bytecode check needed there.
    site_packages_compiled: bool = False
    since_ns: int = 0  # a known file changed after this is hashed again after all


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
                packages = _copy_and_install(spec, source, tmp, final, root, log, installed)
            if expect_packages is not None and packages != expect_packages:
                diff = sorted(set(packages.items()) ^ set(expect_packages.items()))
                raise BuildError(f"the rebuilt set differs from the lock ({diff[:5]}); nothing was published")
            finish(spec, tmp, final, root, version, python, py_xy, packages,
                   lambda: run_smoke_tests(spec, tmp, py_xy, log), log, extra, installed)
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


def _copy_and_install(spec: StackSpec, source: SourcePython, tmp: Path, final: Path, root: SiteRoot,
                      log: BuildLog, installed: Installed) -> dict[str, str]:
    """Copy the interpreter while uv resolves and installs the wheels with the source one.

    uv needs no more of the stack's own python than its version and platform, which the
    source has too (its scripts are made to name the stack's python, pkgcache._retarget);
    the copy (~1.5 s) then runs during the resolve and the downloads instead of before
    them. Source builds and the link wait for it. Leaving this function, the copy is done
    whatever happened: a failed build's folder is removed only after it."""
    log.step(f"copying Python {source.version} from {source.base_prefix} while uv installs the packages")
    copied: dict[str, FileEntry] = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        copy = pool.submit(copy_interpreter, source, tmp, final, copied)
        packages = install_packages(spec, tmp, source.xy, log, root=root, installed=installed,
                                    source=source, copied=copy.result)
        copy.result()
    # Hashed by the copy: the stdlib is not read again for the manifest.
    installed.known = {**copied, **installed.known}
    return packages


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


def install_packages(spec: StackSpec, prefix: Path, py_xy: str, log: BuildLog, skip: set[str] | None = None,
                     root: SiteRoot | None = None, installed: Installed | None = None,
                     source: SourcePython | None = None,
                     copied: Callable[[], object] | None = None) -> dict[str, str]:
    """Install pip and the spec's requirements with uv; return {name: version} of everything.

    With a site root (and no conda layer underneath), the set is resolved once and every
    distribution comes from the site's compiled package cache (pkgcache.py), hardlinked;
    packages with build options are built from source into their own cache entries, keyed
    by those options. Otherwise uv installs straight into the prefix.

    With `source` (the interpreter being copied into `prefix`), the resolve and the wheels
    use it until `copied()` says the stack's own python is complete.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    py = str(prefix / "bin" / f"python{py_xy}")
    p = spec.packages
    # --link-mode copy: uv's default hardlinks from its cache would tie the stack's
    # inodes (and our chmod a-w) to the cache.
    base = [uv_bin(), "pip", "install", "--python", py, "--link-mode", "copy",
            *index_args(p.find_links, p.index_url, p.extra_index_url, p.no_index)]
    env = uv_env()
    skip = skip or set()
    reqs = [r for r in p.requirements if canonicalize_name(Requirement(r).name) not in skip]
    stdlib = source.stdlib if source is not None else prefix / "lib" / f"python{py_xy}"
    bundled = sorted((stdlib / "ensurepip" / "_bundled").glob("pip-*.whl"))
    pip_reqs = [r for r in reqs if canonicalize_name(Requirement(r).name) == "pip"]
    if bundled:
        # The stdlib's own pip wheel serves offline, also for a lock that pins that version.
        bundled_version = bundled[-1].name.split("-")[1]
        if not pip_reqs and not _has_dist(prefix, py_xy, "pip"):
            reqs.insert(0, str(bundled[-1]))
        elif pip_reqs and all(Requirement(r).specifier.contains(bundled_version) for r in pip_reqs):
            reqs = [str(bundled[-1]) if r in pip_reqs else r for r in reqs]
    elif not pip_reqs and not _has_dist(prefix, py_xy, "pip"):
        reqs.insert(0, "pip")
    if root is not None and not skip and reqs:
        from sitestack.build import pkgcache

        index = index_args(p.find_links, p.index_url, p.extra_index_url, p.no_index)
        log.step(f"resolving {len(reqs)} requirement(s) with uv")
        inst = pkgcache.Installer(str(source.executable), str(source.stdlib)) if source is not None else None
        # Shared use-lock from choosing entries to linking them: `gc` never removes one between.
        with shared_lock(pkgcache.use_lock(root), what="the site's package cache"):
            pins = pkgcache.resolve(reqs, inst.python if inst else py, index, log, p.build)
            entries = pkgcache.ensure(pins, py, prefix, py_xy, index, root, log, p.build,
                                      installer=inst, ready=copied)
            if copied is not None:
                copied()  # the stack's python and stdlib are in place before anything is linked
            since = time.time_ns() - 2_000_000_000  # coarse file clock: see finish()
            res = pkgcache.link(entries, prefix)
        if installed is not None:
            installed.known, installed.since_ns = res.known, since
            installed.site_packages_compiled = not res.rewritten_py
        log.step(f"linked {len(pins)} distribution(s) from the site cache ({res.linked} files shared, {res.copied} copied)")
        reqs = []
    elif copied is not None:
        copied()
    # Packages with build options go first, each with its own environment, so their
    # options apply to them alone; the final call then finds them already satisfied.
    # uv's cache would hand back a wheel built under another env: --no-cache.
    for pkg, opts in (p.build.items() if reqs else ()):
        match = [r for r in reqs if not r.startswith("/") and canonicalize_name(Requirement(r).name) == pkg] or [pkg]
        cmd = base + ["--no-cache"] + (["--no-binary", pkg] if opts.no_binary else []) + match
        what = f"building {pkg}" + (" from source" if opts.no_binary else "")
        log.step(what)
        run_logged(cmd, log, what, env=uv_env(dict(opts.env)), tail=25)
    if reqs:
        log.step(f"installing {len(reqs)} requirement(s) with uv")
        run_logged(base + [r for r in reqs], log, "resolving and installing packages", env=env)
    out = run_logged([uv_bin(), "pip", "list", "--python", py, "--format", "json"], log, "listing packages", env=env)
    return {canonicalize_name(d["name"]): d["version"] for d in json.loads(out)}


def _has_dist(prefix: Path, py_xy: str, name: str) -> bool:
    sp = prefix / "lib" / f"python{py_xy}" / "site-packages"
    return any(sp.glob(f"{name}-*.dist-info"))


def finish(
    spec: StackSpec, tmp: Path, final: Path, root: SiteRoot, version: str, python: str,
    py_xy: str, packages: dict[str, str], smoke: Callable[[], list[dict[str, object]]], log: BuildLog,
    extra: dict[str, object], installed: Installed | None = None,
) -> None:
    """Smoke-test while hashing, relocate to the final path, compile bytecode, write records
    and manifest, lock down."""
    installed = installed or Installed()
    log.step("running smoke tests while hashing every file")
    # One read of every byte that did not come from the site cache (whose hashes are kept
    # with each entry): hash it, and find files that name the temp or the final prefix.
    # The smoke tests run meanwhile. A site's test command may write into the prefix (a .pth,
    # a generated cache); whatever it touched is read again once it is done.
    manifest = Manifest(files=dict(installed.known))
    t_smoke = time.time_ns() - 2_000_000_000  # the same clock margin as t_scan below
    with ThreadPoolExecutor(max_workers=1) as pool:
        tests = pool.submit(smoke)
        with Progress(log, "hashed", unit="bytes") as bar:
            hits = refresh(tmp, manifest, installed.since_ns, [str(tmp), str(final)],
                           progress=lambda n: bar.advance(n))
        results = tests.result()  # a failed smoke test raises here: nothing is published
    again = refresh(tmp, manifest, t_smoke, [str(tmp), str(final)])
    reread = {h.path for h in again}
    hits = [h for h in hits if h.path not in reread] + again
    log.add(f"{len(installed.known)} file(s) linked from the site cache were not read again")
    # File times come from a coarse kernel clock that can lag time_ns() by a tick: a margin
    # makes sure every later write counts as "since"; at worst a few files are read twice.
    t_scan = time.time_ns() - 2_000_000_000
    rel = relocate(tmp, str(tmp), str(final), hits)
    relink(tmp, {str(tmp): str(final)})
    if rel.binaries:
        log.add("binaries naming the build folder (left as is): " + ", ".join(rel.binaries))
    log.step("compiling bytecode for every module")
    compile_bytecode(tmp, final, py_xy, log, skip_site_packages=installed.site_packages_compiled)
    log.step("writing records")
    _layer_pip(tmp, py_xy)  # after compiling, so its bytecode is copied, not compiled twice
    atomic_write_text(tmp / "pip.conf", PIP_CONF)
    # Only what changed since the scan is read again: relocated files, new .pyc, pip copy.
    seen = {h.path for h in hits}
    hits += [h for h in refresh(tmp, manifest, t_scan, [str(final)]) if h.path not in seen]
    prefix_hits = [h for h in hits if h.path in manifest.files and h.path not in rel.binaries]

    rec_dir = records_dir(tmp)
    rec_dir.mkdir(exist_ok=True)
    manifest.save(rec_dir / records.MANIFEST)
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
    make_readonly(tmp)


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


def _layer_pip(prefix: Path, py_xy: str) -> None:
    """Keep a dist-info-less copy of pip that layers can run even with inheritance off."""
    src = prefix / "lib" / f"python{py_xy}" / "site-packages" / "pip"
    if src.is_dir():
        # copy2 keeps mtimes, so the copied .pyc stay valid for the copied sources.
        shutil.copytree(src, prefix / "lib" / "sitestack-pip" / "pip", symlinks=True)


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
        compile_dirs(py, [str(lib)], log, strip=str(prefix), prepend=str(final))
        return
    todo = _without_valid_pyc(lib, py_xy, skip=lib / "site-packages")
    if todo:
        r = compile_paths(py, todo, strip=str(prefix), prepend=str(final))
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
