"""Site-wide cache of installed, compiled PyPI distributions, hardlinked into stacks.

A centre publishes a new dated stack every few months, mostly with the same packages.
Each distribution (one `name==version` for one interpreter tag and platform) is installed
once by uv into its own small prefix under ROOT/.sitestack/pypi, compiled to bytecode,
made read-only, and from then on hardlinked into every stack that pins it, as conda's
package cache does. Two versions that share numpy share its inodes, and a rebuild skips
both the copy and the compile.

Files that name a prefix (console-script shebangs, direct_url.json of a local wheel) are
listed per entry and always copied and rewritten, never linked. A stack never depends on
the cache: deleting ROOT/.sitestack/pypi leaves every published stack intact (its files
are hardlinks, not references). The cache is never written in place: entries are built in
a temp folder and renamed, and sitestack replaces files as new inodes.

Packages with `[packages.build.NAME]` options are entries too: built from source by uv with
their own environment, keyed also by a hash of those options, so the next dated version
links the build instead of compiling again. New wheels are installed by ONE uv call into a
shared temp prefix and split into per-distribution entries along their RECORD files (one uv
call per distribution costs a resolver start and an install pass each). Each entry keeps
the sha256, size and mode of its files (files.json), so a stack that links it need not
read those bytes again. Those hashes are computed from the installed bytes, never taken
from the wheels' RECORD: uv does not check RECORD against the files (its installer says
so: "It's not validated anyway (pip doesn't)"), wheels with wrong RECORD hashes exist
(astral-sh/uv#11723: some torch releases; bidict 0.24.0's hex digests), and RECORD lists
neither the .pyc nor the scripts as uv rewrote them. One wrong hash in files.json would make
`sitestack verify` report tampering in every stack that links the file.

A cold build fills the cache while the stack's interpreter is still being copied: uv installs
the wheels with the source interpreter (same version and platform), and the scripts it
writes are then made to name the stack's python (`_retarget`); source builds run beside that
uv call, with the stack's own python. The split moves whole folders where RECORD says one
distribution owns them, and every new entry is hashed in one batched pool.

Length (over ~400 lines): filling the cache (one uv call beside the source builds, the split
along RECORD, the scan), linking from it and the layout gc reads are one on-disk format
(entry.json, files.json, the tree), kept in one place; other engineers were editing the fill
(builds without isolation) while it grew, so it was not split then.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sitestack.core.bytecode import pyc_paths
from sitestack.core.fsutil import atomic_write_json, file_lock, make_dirs, make_readonly, rmtree
from sitestack.core.manifest import FileEntry, Manifest, PrefixHit, hash_files, scan, walk
from sitestack.core.progress import Progress
from sitestack.core.publish import clear_stale, make_temp, publish
from sitestack.core.uvtool import run_logged, uv_bin, uv_env

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot
    from sitestack.core.log import BuildLog
    from sitestack.site.spec import BuildOptions

ENTRY = "entry.json"
FILES = "files.json"  # Manifest of the entry's tree, modes as linked (read-only)


@dataclass(frozen=True)
class Entry:
    path: Path  # the entry folder; its files are under path / "tree"
    pin: str
    rewrite: tuple[str, ...]  # files that name an old prefix: copied and rewritten
    old: tuple[str, ...]  # the prefixes they name
    options: str = ""  # hash of the build options of a source build, "" for a wheel

    @property
    def tree(self) -> Path:
        return self.path / "tree"

    def files(self) -> Manifest | None:
        """The entry's recorded hashes (None for entries cached before they were kept)."""
        from sitestack.errors import VerifyError

        try:
            return Manifest.load(self.path / FILES)
        except (OSError, VerifyError):
            return None  # then the stack hashes these files itself


@dataclass(frozen=True)
class LinkResult:
    linked: int
    copied: int
    known: dict[str, FileEntry] = field(default_factory=dict)  # linked files, hashes from the entry
    rewritten_py: bool = False  # a copied-and-rewritten .py: its cached .pyc no longer matches


def cache_root(root: SiteRoot) -> Path:
    return root.meta / "pypi"


def uv_cache(root: SiteRoot) -> Path:
    """The site's own uv cache, beside the package cache (see _install_args); its parent is
    made here with an exact mode, before uv makes the rest with the user's umask."""
    path = _uv_cache(cache_root(root))
    make_dirs(path.parent)
    return path


def uv_caches(root: SiteRoot) -> list[Path]:
    """The per-user uv caches that exist under this site, this user's first (gc empties them)."""
    parent = _uv_cache(cache_root(root)).parent
    if not parent.is_dir():
        return []
    return sorted((p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()),
                  key=lambda p: (p.name != str(os.getuid()), p.name))


def _uv_cache(base: Path) -> Path:
    # One per user: uv writes its cache with the user's umask, and site staff share the root.
    return base.parent / "uv" / str(os.getuid())


def _uv(args: list[str], log: BuildLog, what: str, stdin: str | None = None,
        env: Mapping[str, str] | None = None, tail: int | None = None) -> str:
    return run_logged([uv_bin(), *args], log, what, env=uv_env(dict(env or {})), stdin=stdin, tail=tail)


def no_binary_args(build: Mapping[str, BuildOptions]) -> list[str]:
    """uv's flags for packages that must come from their sdist (uv has no per-package form
    other than naming the package: ``--no-binary NAME``)."""
    return [a for name, o in sorted(build.items()) if o.no_binary for a in ("--no-binary", name)]


def resolve(requirements: Sequence[str], python: str, index: Sequence[str], log: BuildLog,
            build: Mapping[str, BuildOptions] | None = None, cache_dir: Path | None = None) -> list[str]:
    """Exact pins for the whole set, resolved by uv for this interpreter (`cache_dir`: the
    site's uv cache, whose index pages the install then reuses)."""
    out = _uv(["pip", "compile", "-", "--python", python, "--no-header", "--no-annotate", "--quiet", *index,
               *no_binary_args(build or {}), *(["--cache-dir", str(cache_dir)] if cache_dir else [])],
              log, "resolving packages", stdin="\n".join(requirements) + "\n")
    return [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _local(pin: str) -> Path | None:
    """The wheel file of a local pin (`name @ file://...`, a file URL or a bare path)."""
    if " @ file://" in pin:
        return Path(pin.split(" @ file://", 1)[1])
    if pin.startswith("file://"):
        return Path(pin[len("file://"):])
    return Path(pin) if pin.startswith("/") else None


def pin_name(pin: str) -> str:
    """The canonical project name of a pin."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    path = _local(pin)
    if path is not None and " @ " not in pin:
        return canonicalize_name(path.name.split("-")[0])
    return canonicalize_name(Requirement(pin).name)


def options_hash(opts: BuildOptions | None, pins: Sequence[str] = ()) -> str:
    """A source build's identity beyond its pin: no-binary and every env value; without build
    isolation also the set's pins (horovod compiled against torch X is not one against Y)."""
    if opts is None:
        return ""
    d: dict[str, object] = {"no_binary": opts.no_binary, "env": dict(sorted(opts.env.items()))}
    if not opts.build_isolation:  # only then: the keys of isolated builds stay as they were
        # By name and version (_safe): a local wheel's path (stdlib pip's) differs per build.
        d |= {"build_isolation": False, "against": sorted(_safe(p) for p in pins)}
    doc = json.dumps(d, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _key(pin: str, tag: str, options: str = "") -> str:
    """Cache key: the pin, or for a local file its name and content hash, the interpreter's
    tag and platform, and the build options' hash.

    A local wheel's path changes with every build (it may sit in the build folder), its
    content does not.
    """
    ident = pin
    if (path := _local(pin)) is not None and path.is_file():
        ident = f"{path.name} sha256={hashlib.sha256(path.read_bytes()).hexdigest()}"
    extra = f"\noptions={options}" if options else ""
    return hashlib.sha256(f"{ident}\n{tag}{extra}".encode()).hexdigest()[:20]


def _tag(python: str) -> str:
    r = subprocess.run([python, "-I", "-c", "import sys, sysconfig; print(sys.implementation.cache_tag, "
                        "sysconfig.get_platform())"], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _load(path: Path) -> Entry:
    data = json.loads((path / ENTRY).read_text(encoding="utf-8"))
    return Entry(path, data["pin"], tuple(data["rewrite"]), tuple(data["old"]), data.get("options", ""))


@dataclass(frozen=True)
class Installer:
    """The interpreter the stack's python is being copied from: same version, same platform.
    uv installs the wheels with it while the copy is made, so the build need not wait."""

    python: str  # its executable, as uv writes it into console scripts
    stdlib: str  # its standard library (the bundled pip wheel is installed from there)
    tag: str = ""  # its cache tag and platform, if known (saves starting it for _tag)


def ensure(pins: Sequence[str], python: str, prefix: Path, py_xy: str, index: Sequence[str],
           root: SiteRoot, log: BuildLog, build: Mapping[str, BuildOptions] | None = None, *,
           installer: Installer | None = None, ready: Callable[[], object] | None = None) -> list[Entry]:
    """Every pin's entry, installing and compiling the missing ones.

    Pins named in `build` are built from source with their options and keyed by them, by
    the stack's own `python` (their C code sees its sysconfig) once `ready()` returns, each
    beside the one uv call for the wheels. `installer` may install the wheels while the
    stack's python is still being copied."""
    build = build or {}
    base = cache_root(root)
    make_dirs(base)  # exact modes: the library may run under any umask
    make_dirs(_uv_cache(base).parent)
    tag = installer.tag if installer and installer.tag else _tag(installer.python if installer else python)
    opts = {pin: build.get(pin_name(pin)) for pin in pins}
    names = {}
    for pin in pins:
        h = options_hash(opts[pin], pins)
        names[pin] = f"{_safe(pin)}{'-src' if h else ''}-{_key(pin, tag, h)}"
    missing = [p for p in pins if not (base / names[p] / ENTRY).is_file()]
    if missing:
        with file_lock(root.locks / "pypi-cache.lock", what="the site's package cache"):
            clear_stale(base, ".tmp-", locked=True)  # we hold the lock: from killed builds
            missing = [p for p in missing if not (base / names[p] / ENTRY).is_file()]
            if missing:
                log.step(f"installing {len(missing)} new distribution(s) into the site cache")
                _populate(missing, names, opts, python, prefix, py_xy, index, base, log, installer, ready)
    hits = len(pins) - len(missing)
    log.add(f"site cache: {hits} hit(s), {len(missing)} new: " + ", ".join(
        f"{p} -> {names[p]}" + (" (new)" if p in missing else "") for p in pins))
    return [_load(base / names[p]) for p in pins]


def _safe(pin: str) -> str:
    if (path := _local(pin)) is not None:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name)[:80]
    name = pin.split("==")[0].split(" @ ")[0].strip()
    version = pin.split("==")[1] if "==" in pin else "local"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{name}-{version}")[:80]


def _install_args(python: str, tree: Path, index: Sequence[str], uv_cache: Path | None = None) -> list[str]:
    """uv's install into an entry's tree. With `uv_cache` (the site's own uv cache, on the
    site's filesystem) uv hardlinks the unzipped wheels, as a plain `uv pip install` does
    from its cache: copying them wrote 470 MiB more for the small set (install step
    9.1-9.7 s against 1.1-1.5 s, measured under load). It must be sitestack's own cache:
    the entries are made read-only through those shared inodes, and a user's uv cache would
    then hand read-only files to their venvs. uv never writes a cached file in place, so
    the entries stay as hashed; deleting that cache (or the whole site cache) leaves every
    stack intact. Without it (source builds, --no-cache) the files are copied."""
    # --compile-bytecode: uv's compiler (its own pool of the target python) beats one
    # compileall run over the same files by about a quarter.
    link = ["--link-mode", "hardlink", "--cache-dir", str(uv_cache)] if uv_cache else ["--link-mode", "copy"]
    return ["pip", "install", "--no-deps", *link, "--compile-bytecode", "--prefix", str(tree),
            "--python", python, *index]


def _populate(missing: Sequence[str], names: dict[str, str], opts: Mapping[str, BuildOptions | None],
              python: str, prefix: Path, py_xy: str, index: Sequence[str], base: Path, log: BuildLog,
              installer: Installer | None, ready: Callable[[], object] | None) -> None:
    """Install the missing pins into temp entries and publish each one once it is complete.

    One thread runs the uv call for every wheel (then splits and scans its result), one
    thread per source build runs that build: a compiler and uv's downloads overlap, as in
    one uv call. Every thread is waited for before anything is removed, so a failed build
    leaves no half entry and no process writing into a removed folder."""
    temps: dict[str, Path] = {}  # every temp made, for the finally; threads add theirs
    shared: Path | None = None
    wheels = [p for p in missing if opts[p] is None]
    sources = [p for p in missing if opts[p] is not None]
    # Without build isolation a build imports the set's packages (horovod's imports torch):
    # it runs after the others, on their published entries (PYTHONPATH), not beside them.
    later = [p for p in sources if not opts[p].build_isolation]  # type: ignore[union-attr]
    try:
        for pin in sources:
            temps[pin] = make_temp(base, ".tmp-", 0o700)
        if wheels:
            # make_temp, not temp_tree: it lives beside the per-pin temps, each published on
            # its own; the finally removes what is left, clear_stale(".tmp-") killed runs'.
            shared = make_temp(base, ".tmp-all-", 0o700)
        with Progress(log, "installed into the site cache", len(missing), noun="distributions") as bar, \
                ThreadPoolExecutor(max_workers=1 + len(sources)) as pool:
            jobs = []
            if shared is not None:
                jobs.append(pool.submit(_fill_wheels, wheels, shared, temps, names, python, prefix, py_xy,
                                        index, base, log, installer, bar))
            for pin in (p for p in sources if p not in later):
                jobs.append(pool.submit(_fill_source, pin, opts[pin], temps[pin], names[pin], python, prefix,
                                        index, base, log, ready, bar))
            errors: list[BaseException] = []
            for job in jobs:  # in order: the wheels' error first, then the builds'
                try:
                    job.result()
                except BaseException as e:  # re-raised below, once every thread is done
                    errors.append(e)
            if errors:
                raise errors[0]
            sp = f"lib/python{py_xy}/site-packages"
            for pin in later:
                _fill_source(pin, opts[pin], temps[pin], names[pin], python, prefix, index, base, log, ready, bar,
                             [str(base / names[q] / "tree" / sp) for q in names if q != pin])
    finally:
        for tmp in temps.values():
            rmtree(tmp)
        if shared is not None:
            rmtree(shared)


def _fill_wheels(wheels: Sequence[str], shared: Path, temps: dict[str, Path], names: Mapping[str, str],
                 python: str, prefix: Path, py_xy: str, index: Sequence[str], base: Path, log: BuildLog,
                 installer: Installer | None, bar: Progress) -> None:
    """The one uv call for every wheel, split into entries along RECORD, scanned in one pass."""
    tree = shared / "tree"
    _uv([*_install_args(installer.python if installer else python, tree, index, _uv_cache(base)), *wheels], log,
        f"installing {len(wheels)} distribution(s)")
    if installer is not None:
        _retarget(tree, py_xy, installer, f"{prefix}/bin/python{py_xy}", f"{prefix}/lib/python{py_xy}")
    # Compiled (by uv) before the split, all at once; each .pyc moves with its source.
    split = _split(tree, py_xy, wheels, base)
    temps.update({pin: tmp for pin, (tmp, _f, _l) in split.items()})
    # Nothing was ever written at an entry's own temp path: what a wheel's files may name
    # is the shared tree and the stack they were installed for.
    old = (str(tree), str(prefix))
    hashed, hits = _scan_split(base, split, old)
    for pin, (tmp, files, links) in split.items():
        m = Manifest({f: hashed[f"{tmp.name}/tree/{f}"] for f in files},
                     {ln: os.readlink(os.path.join(tmp, "tree", ln)) for ln in links}, _parents([*files, *links]))
        mine = [PrefixHit(h.path.split("/", 2)[2], h.kind) for h in hits if h.path.startswith(f"{tmp.name}/")]
        _finish_entry(pin, tmp, m, mine, (str(tmp / "tree"), *old), None, base / names[pin])
        bar.advance()
    for pin in wheels:
        if pin not in split:  # no dist-info matched its name: install it alone
            tmp = temps[pin] = make_temp(base, ".tmp-", 0o700)
            _uv([*_install_args(python, tmp / "tree", index, _uv_cache(base)), pin], log, f"installing {pin}")
            _finish_scanned(pin, tmp, (str(tmp / "tree"), str(prefix)), None, base / names[pin])
            bar.advance()


def _fill_source(pin: str, o: BuildOptions | None, tmp: Path, dest_name: str, python: str, prefix: Path,
                 index: Sequence[str], base: Path, log: BuildLog, ready: Callable[[], object] | None,
                 bar: Progress, path: Sequence[str] = ()) -> None:
    """One package built from its sdist (or installed with its env) by the stack's python;
    `path`: what a build without isolation may import."""
    assert o is not None
    if ready is not None:
        ready()  # the stack's python, which builds it, is complete
    name = pin_name(pin)
    log.step(f"building {name} from source" if o.no_binary else f"installing {name} with its build env")
    # --no-cache: uv's cache keeps a wheel built from an sdist and would hand it
    # back whatever the env now says; this site cache is keyed by the env instead.
    args = [*_install_args(python, tmp / "tree", index), "--no-cache",
            *(["--no-binary", name] if o.no_binary else []),
            *([] if o.build_isolation else ["--no-build-isolation-package", name]), pin]
    env = dict(o.env)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([*filter(None, [o.env.get("PYTHONPATH")]), *path])
    _uv(args, log, f"building {name} from source" if o.no_binary else f"installing {name}", env=env, tail=25)
    _finish_scanned(pin, tmp, (str(tmp / "tree"), str(prefix)), o, base / dest_name)
    bar.advance()


def _finish_scanned(pin: str, tmp: Path, old: tuple[str, ...], o: BuildOptions | None, dest: Path) -> None:
    m, hits = _scan_entry(tmp / "tree", old)
    _finish_entry(pin, tmp, m, hits, old, o, dest)


def _finish_entry(pin: str, tmp: Path, m: Manifest, hits: list[PrefixHit], old: tuple[str, ...],
                  o: BuildOptions | None, dest: Path) -> None:
    """Record the entry's hashes and prefix-naming files, lock it, publish it."""
    for rel, fe in m.files.items():
        m.files[rel] = FileEntry(fe.sha256, fe.size, _readonly_mode(fe.mode))
    m.save(tmp / FILES)
    # Only text files are rewritten per stack (shebangs, direct_url.json). A compiled
    # extension that names the build's temp prefix does so in debug info (-I paths
    # under -g), which nothing reads at run time; a byte replacement of another length
    # would break the ELF, and copying it would cost the link. It is linked as is.
    atomic_write_json(tmp / ENTRY, {"pin": pin, "old": list(old), "options": options_hash(o),
                                    "env": dict(o.env) if o else {},
                                    "rewrite": sorted(h.path for h in hits if h.kind == "text"),
                                    "binary": sorted(h.path for h in hits if h.kind != "text")})
    make_readonly(tmp)
    try:
        publish(tmp, dest)
    except OSError:
        rmtree(tmp)  # another build made it first


def _parents(rels: Sequence[str]) -> list[str]:
    """Every folder above the given paths: the entry's folders, as a walk would list them."""
    out: set[str] = set()
    for rel in rels:
        d = os.path.dirname(rel)
        while d and d not in out:
            out.add(d)
            d = os.path.dirname(d)
    return sorted(out)


def _retarget(tree: Path, py_xy: str, installer: Installer, python: str, stdlib: str) -> None:
    """Name the stack's python where uv named the installing one: the shebang of each script
    in bin/ (uv writes `#!PYTHON [args]`, or for a long path or one with a space the
    `/bin/sh` exec trick) and the URL of a wheel from its stdlib in direct_url.json (the
    bundled pip). uv writes the interpreter's path nowhere else (its wheel installer
    writes the package's files as they are, scripts, RECORD, INSTALLER, REQUESTED and
    direct_url.json); these files then name the stack's temp prefix, as if uv had run with
    the stack's own python."""
    from sitestack.core.relocate import fix_shebang, write_replacing

    old, new = installer.python.encode(), python.encode()
    quoted = b"'" + old.replace(b"'", b"'\\''") + b"'"
    trick = b"#!/bin/sh\n'''exec' " + quoted + b' "$0" "$@"\n' + b"' '''\n"
    bindir = tree / "bin"
    for de in os.scandir(bindir) if bindir.is_dir() else ():
        if de.is_symlink() or not de.is_file():
            continue
        with open(de.path, "rb") as f:
            data = f.read()
        if data.startswith(trick):
            data = b"#!" + new + b"\n" + data[len(trick):]
        elif data.startswith(b"#!" + old) and data[len(old) + 2:len(old) + 3] in (b"\n", b" ", b"\t", b""):
            data = b"#!" + new + data[len(old) + 2:]
        else:
            continue
        write_replacing(Path(de.path), fix_shebang(data))
    sp = tree / "lib" / f"python{py_xy}" / "site-packages"
    src_uri, dst_uri = Path(installer.stdlib).as_uri().encode() + b"/", Path(stdlib).as_uri().encode() + b"/"
    for du in sp.glob("*.dist-info/direct_url.json") if sp.is_dir() else ():
        data = du.read_bytes()
        if src_uri in data:
            write_replacing(du, data.replace(src_uri, dst_uri))


def _scan_entry(tree: Path, old: Sequence[str]) -> tuple[Manifest, list[PrefixHit]]:
    """scan() of one entry's tree, with the files that name any `old` prefix (_find_old)."""
    common = os.path.commonpath(old) if old else ""
    if len(common) < 8:  # too short to be a useful filter ("/", "/tmp")
        return scan(tree, old, exclude=())
    m, maybe = scan(tree, [common], exclude=())
    return m, _find_old(tree, maybe, old)


def _scan_split(base: Path, split: Mapping[str, tuple[Path, list[str], list[str]]],
                old: Sequence[str]) -> tuple[dict[str, FileEntry], list[PrefixHit]]:
    """The files of every new entry of the split hashed in ONE pool (one per entry would
    start 14 pools for the small set), with those that name an `old` prefix; paths are
    relative to the cache folder: `.tmp-XXX/tree/REL`."""
    rels = [f"{tmp.name}/tree/{f}" for tmp, files, _links in split.values() for f in files]
    common = os.path.commonpath(old)
    filtered = len(common) >= 8
    files: dict[str, FileEntry] = {}
    maybe: list[PrefixHit] = []
    needles = (common.encode(),) if filtered else tuple(o.encode() for o in old)
    for rel, (digest, size, mode, hit) in hash_files(base, rels, needles):
        files[rel] = FileEntry(digest, size, mode)
        if hit:
            maybe.append(PrefixHit(rel, hit))
    return files, _find_old(base, maybe, old) if filtered else maybe


def _find_old(tree: Path, maybe: list[PrefixHit], old: Sequence[str]) -> list[PrefixHit]:
    """Of the files that hold the prefixes' common parent (the site's .sitestack folder),
    those that hold a prefix itself: ONE search of every byte for the parent, and the few
    files that hold it read again. Three needles cost three searches of every chunk,
    twice the hashing's own time."""
    needles = [o.encode() for o in old]
    hits = []
    for h in maybe:
        with open(tree / h.path, "rb") as f:
            data = f.read()
        if any(n in data for n in needles):
            hits.append(h)
    return hits


def _readonly_mode(mode: int) -> int:
    """The mode make_readonly gives a file (the entry is scanned before it is locked)."""
    mode = (mode & ~0o222) | 0o444
    return mode | 0o111 if mode & 0o100 else mode


def _split(tree: Path, py_xy: str, pins: Sequence[str], base: Path) -> dict[str, tuple[Path, list[str], list[str]]]:
    """Move each distribution's files (its RECORD) out of one shared install into its own
    temp entry; returns {pin: (temp entry folder, files, symlinks)} (paths relative to the
    entry's tree) for every pin whose dist-info was found.

    A folder whose files all belong to one distribution by every RECORD in the tree (numpy/,
    its dist-info, scipy.libs/) moves in ONE rename, bytecode and all; only files of shared
    folders (site-packages itself, bin/, a namespace package) move one by one, each .py
    with its .pyc. The entry's file list is then one walk of its tree."""
    sp = tree / "lib" / f"python{py_xy}" / "site-packages"
    by_name = {pin_name(p): p for p in pins}
    out: dict[str, tuple[Path, list[str], list[str]]] = {}
    if not sp.is_dir():
        return out
    from packaging.utils import canonicalize_name

    top = str(tree) + os.sep
    listed: dict[str, list[str]] = {}  # owner (a pin, or the dist-info of no pin) -> its files
    owners: dict[str, set[str]] = {}  # folder -> owners with a file below it
    for info in sorted(sp.glob("*.dist-info")):
        pin = by_name.get(canonicalize_name(info.name[: -len(".dist-info")].rsplit("-", 1)[0]))
        record = info / "RECORD"
        # A dist-info of no pin (or without RECORD) still owns its folders: none moves whole.
        owner = pin if pin is not None and pin not in listed and record.is_file() else f"?{info.name}"
        rows: list[str] = []
        if record.is_file():
            with open(record, newline="", encoding="utf-8") as f:
                rows = [row[0] for row in csv.reader(f) if row]
        # The dist-info itself, whatever RECORD says of it.
        subs = [str(info.relative_to(tree)) + "/RECORD"]
        for rel in rows:
            src = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(sp, rel))
            if src.startswith(top):  # outside the prefix: nothing a stack could link
                subs.append(src[len(top):])
        listed[owner] = subs
        for sub in subs:
            d = os.path.dirname(sub)
            while d:
                owners.setdefault(d, set()).add(owner)
                d = os.path.dirname(d)
    keep = {"lib", f"lib/python{py_xy}", str(sp.relative_to(tree))}  # never moved whole
    for owner, subs in listed.items():
        if owner.startswith("?"):
            continue  # its pin, if any, is installed alone
        tmp = make_temp(base, ".tmp-", 0o700)
        out[owner] = (tmp, [], [])
        dest_tree = str(tmp / "tree")
        whole: dict[str, None] = {}  # in order, once each
        single: list[str] = []
        for sub in subs:
            unit = None
            d = os.path.dirname(sub)
            while d:  # the highest folder that is this distribution's alone
                if "/" in d and d not in keep and owners.get(d) == {owner}:
                    unit = d
                d = os.path.dirname(d)
            if unit is None:
                single.append(sub)
            else:
                whole[unit] = None
        _move(str(tree), dest_tree, list(whole), single, py_xy)
        files, links, _dirs = walk(Path(dest_tree))
        out[owner] = (tmp, files, links)
    return out


def _move(tree: str, dest_tree: str, whole: Sequence[str], single: Sequence[str], py_xy: str) -> None:
    """Rename folders (`whole`) and single files (with the bytecode of a .py), paths
    relative to the trees, from `tree` to `dest_tree`: strings, one lstat per single
    file and each folder made once."""
    made: set[str] = set()

    def move(sub: str) -> None:
        parent = os.path.dirname(dest := os.path.join(dest_tree, sub))
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.rename(os.path.join(tree, sub), dest)

    for d in whole:
        with contextlib.suppress(FileNotFoundError):  # a folder RECORD lists but uv did not make
            move(d)
    for sub in single:
        src = os.path.join(tree, sub)
        try:
            if stat.S_ISDIR(os.lstat(src).st_mode):
                continue  # folders are made as needed
        except FileNotFoundError:
            continue  # listed twice, or already moved (in a folder)
        move(sub)
        if sub.endswith(".py"):
            for pyc in pyc_paths(sub, py_xy):  # compiled in the shared tree
                with contextlib.suppress(FileNotFoundError):  # not compiled at this -O level
                    move(pyc)


def link(entries: Sequence[Entry], prefix: Path) -> LinkResult:
    """Hardlink every entry's files into `prefix`; copy and rewrite the prefix-naming ones.

    Returns the linked files' recorded hashes, so the build need not read them again. One
    scandir walk per entry and about one system call per file (the link itself; a clash
    with a file an earlier distribution shipped is found by the link failing)."""
    linked = copied = 0
    rewritten_py = False
    known: dict[str, FileEntry] = {}
    new = str(prefix).encode()
    for e in entries:
        rewrite = set(e.rewrite)
        m = e.files()
        files = m.files if m is not None else {}
        todo = [(str(e.tree), str(prefix), "")]
        while todo:
            src_dir, dest_dir, rel_dir = todo.pop()
            with os.scandir(src_dir) as it:
                items = list(it)
            for de in items:
                src, dest = de.path, os.path.join(dest_dir, de.name)
                rel = f"{rel_dir}{de.name}"
                if de.is_symlink():
                    _replace_link(src, Path(dest))
                    known.pop(rel, None)
                elif de.is_dir(follow_symlinks=False):
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(dest)
                    todo.append((src, dest, f"{rel}/"))
                elif rel in rewrite:
                    data = Path(src).read_bytes()
                    for o in e.old:
                        data = data.replace(o.encode(), new)
                    _unlink_any(dest)
                    known.pop(rel, None)
                    Path(dest).write_bytes(data)
                    os.chmod(dest, de.stat(follow_symlinks=False).st_mode & 0o777 | 0o200)
                    copied += 1
                    rewritten_py = rewritten_py or de.name.endswith(".py")
                else:
                    try:
                        try:
                            os.link(src, dest)
                        except FileExistsError:
                            # a file two distributions ship: the later wins, as with pip
                            os.unlink(dest)
                            known.pop(rel, None)
                            os.link(src, dest)
                        linked += 1
                        if rel in files:
                            known[rel] = files[rel]
                    except OSError:
                        _unlink_any(dest)
                        shutil.copy2(src, dest)  # another filesystem, or not allowed
                        copied += 1
    return LinkResult(linked, copied, known, rewritten_py)


def _unlink_any(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _replace_link(src: str, dest: Path) -> None:
    if os.path.lexists(dest):
        os.unlink(dest)
    os.symlink(os.readlink(src), dest)


# --- the cache's layout, for `sitestack gc` (build/gc.py) -------------------------------------
# Complete entries are ROOT/.sitestack/pypi/<name>/ with entry.json; anything starting with "."
# is a build's temp (.tmp-*) or an entry being removed (.gc-*), never looked up by a build.

GC_PREFIX = ".gc-"


def use_lock(root: SiteRoot) -> Path:
    """Held shared by a build from choosing its entries to linking them; exclusive by gc."""
    return root.locks / "pypi-cache.use.lock"


def entries(root: SiteRoot) -> list[Path]:
    """Every complete entry folder."""
    base = cache_root(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if not p.name.startswith(".") and (p / ENTRY).is_file())


def leftovers(root: SiteRoot) -> list[Path]:
    """Temp folders of killed cache fills and half-removed entries (call under the use-lock)."""
    base = cache_root(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.name.startswith((".tmp-", GC_PREFIX)))


def entry_files(entry: Path) -> list[Path]:
    """The regular files of an entry's tree (the ones stacks hardlink)."""
    out = []
    for dirpath, _dirs, files in os.walk(entry / "tree"):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                out.append(Path(p))
    return out


def discard(entry: Path) -> Path:
    """Take an entry out of the cache in one rename; the caller deletes what this returns.

    A build looks entries up by their exact name, so a `.gc-` folder half deleted by a killed
    gc is never linked; the next gc removes it.
    """
    dest = entry.with_name(f"{GC_PREFIX}{entry.name}-{os.getpid()}")
    os.rename(entry, dest)
    return dest
