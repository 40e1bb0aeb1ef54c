"""Filling the site cache: the missing pins installed by uv into temp entries, then published.

New wheels are installed by ONE uv call into a shared temp prefix and split into
per-distribution entries along their RECORD files (one uv call per distribution costs a
resolver start and an install pass each); local wheel files (the stdlib's pip) get a second
call of their own, which needs no download. uv does not compile that one: its modules get the
source interpreter's own bytecode where CPython takes it (build/reusepyc.py), the rest are
compiled then. A
cold build fills the cache while the stack's interpreter is still being copied: uv installs
the wheels with the source interpreter (same version and platform), and the scripts it
writes are then made to name the stack's python (`_retarget`); source builds run beside
that uv call, with the stack's own python, and builds without isolation after it, on the
entries just made. The split moves whole folders where RECORD says one distribution owns
them, and every new entry is hashed in one batched pool.

Hashes are computed from the installed bytes, never taken from the wheels' RECORD: uv does
not check RECORD against the files (its installer says so: "It's not validated anyway (pip
doesn't)"), wheels with wrong RECORD hashes exist (astral-sh/uv#11723: some torch releases;
bidict 0.24.0's hex digests), and RECORD lists neither the .pyc nor the scripts as uv
rewrote them. One wrong hash in files.json would make `sitestack verify` report tampering
in every stack that links the file.
"""

from __future__ import annotations

import contextlib
import csv
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.build.cacheentry import ENTRY, FILES, is_wheel_file, pin_name
from sitestack.build.cacheuv import install_args, run_uv
from sitestack.build.reusepyc import reuse_bytecode
from sitestack.core.bytecode import compile_dirs, pyc_paths
from sitestack.core.fsutil import atomic_write_json, make_readonly, readonly_mode, rmtree
from sitestack.core.manifest import FileEntry, Manifest, PrefixHit, hash_files, scan, walk
from sitestack.core.progress import Progress
from sitestack.core.publish import make_temp, publish

if TYPE_CHECKING:
    from sitestack.core.log import BuildLog
    from sitestack.site.spec import BuildOptions


@dataclass(frozen=True)
class Installer:
    """The interpreter the stack's python is being copied from: same version, same platform.
    uv installs the wheels with it while the copy is made, so the build need not wait."""

    python: str  # its executable, as uv writes it into console scripts
    stdlib: str  # its standard library (the bundled pip wheel is installed from there)
    tag: str = ""  # its cache tag and platform, if known (saves starting it for _tag)
    purelib: str = ""  # its site-packages and bytecode magic number (hex), if known:
    magic: str = ""  # the stdlib's pip wheel then reuses the bytecode found there


def fill(missing: Sequence[str], names: dict[str, str], opts: Mapping[str, BuildOptions | None],
         python: str, prefix: Path, py_xy: str, index: Sequence[str], base: Path, log: BuildLog,
         installer: Installer | None, ready: Callable[[], object] | None, *,
         hashes: Mapping[str, str], uv_cache: Path, tty: bool | None = None) -> None:
    """Install the missing pins into temp entries and publish each one once it is complete,
    as `base / names[pin]`; `hashes[pin]` is its build options' hash (in its name and its
    entry.json), `uv_cache` the site's uv cache the wheels are hardlinked from; `tty=False`
    for a fill beside another one (one live bar at a time: its line is printed at the end).

    One thread runs the uv call for the wheels from the index, one the call for local wheel
    files (each then splits and scans its result), one thread per source build runs that
    build: a compiler and uv's downloads overlap, as in one uv call. Every thread is waited
    for before anything is removed, so a failed build leaves no half entry and no process
    writing into a removed folder."""
    temps: dict[str, Path] = {}  # every temp made, for the finally; threads add theirs
    shared: list[Path] = []
    wheels = [p for p in missing if opts[p] is None]
    # Local wheels (the stdlib's pip: 491 modules, an eighth of the small set's) get their
    # own uv call, which needs no download; their bytecode is mostly reused, not compiled.
    local = [p for p in wheels if is_wheel_file(p)]
    groups = [g for g in (local, [p for p in wheels if p not in local]) if g]
    sources = [p for p in missing if opts[p] is not None]
    # Without build isolation a build imports the set's packages (horovod's imports torch):
    # it runs after the others, on their published entries (PYTHONPATH), not beside them.
    later = [p for p in sources if not opts[p].build_isolation]  # type: ignore[union-attr]
    try:
        for pin in sources:
            temps[pin] = make_temp(base, ".tmp-", 0o700)
        # make_temp, not temp_tree: it lives beside the per-pin temps, each published on
        # its own; the finally removes what is left, clear_stale(".tmp-") killed runs'.
        for _ in groups:
            shared.append(make_temp(base, ".tmp-all-", 0o700))
        with Progress(log, "installed into the site cache", len(missing), noun="distributions", tty=tty) as bar, \
                ThreadPoolExecutor(max_workers=len(groups) + len(sources)) as pool:
            jobs = [pool.submit(_fill_wheels, group, tree, temps, names, python, prefix, py_xy,
                                index, base, log, installer, bar, uv_cache)
                    for group, tree in zip(groups, shared, strict=True)]
            for pin in (p for p in sources if p not in later):
                jobs.append(pool.submit(_fill_source, pin, opts[pin], hashes[pin], temps[pin], names[pin], python,
                                        prefix, index, base, log, ready, bar))
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
                _fill_source(pin, opts[pin], hashes[pin], temps[pin], names[pin], python, prefix, index, base, log, ready, bar,
                             [str(base / names[q] / "tree" / sp) for q in names if q != pin])
    finally:
        for tmp in [*temps.values(), *shared]:
            rmtree(tmp)


def _fill_wheels(wheels: Sequence[str], shared: Path, temps: dict[str, Path], names: Mapping[str, str],
                 python: str, prefix: Path, py_xy: str, index: Sequence[str], base: Path, log: BuildLog,
                 installer: Installer | None, bar: Progress, uv_cache: Path) -> None:
    """The one uv call for every wheel, split into entries along RECORD, scanned in one pass."""
    tree = shared / "tree"
    reuse = installer is not None and bool(installer.purelib and installer.magic) and all(map(is_wheel_file, wheels))
    run_uv([*install_args(installer.python if installer else python, tree, index, uv_cache, compile=not reuse),
            *wheels], log, f"installing {len(wheels)} distribution(s)")
    if reuse:
        assert installer is not None
        _reuse_bytecode(tree, py_xy, installer, log)
    if installer is not None:
        _retarget(tree, py_xy, installer, f"{prefix}/bin/python{py_xy}", f"{prefix}/lib/python{py_xy}")
    # Compiled before the split (by uv, or reused and compiled in _reuse_bytecode), all at
    # once; each .pyc moves with its source.
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
        _finish_entry(pin, tmp, m, mine, (str(tmp / "tree"), *old), None, "", base / names[pin])
        bar.advance()
    for pin in wheels:
        if pin not in split:  # no dist-info matched its name: install it alone
            tmp = temps[pin] = make_temp(base, ".tmp-", 0o700)
            run_uv([*install_args(python, tmp / "tree", index, uv_cache), pin], log, f"installing {pin}")
            _finish_scanned(pin, tmp, (str(tmp / "tree"), str(prefix)), None, "", base / names[pin])
            bar.advance()


def _reuse_bytecode(tree: Path, py_xy: str, installer: Installer, log: BuildLog) -> None:
    """The installer's own bytecode for the local wheels' files it holds too (the stdlib's
    pip, which ensurepip installed and compiled there); the rest compiled on all cores."""
    sp = tree / "lib" / f"python{py_xy}" / "site-packages"
    left = reuse_bytecode(sp, Path(installer.purelib), py_xy, bytes.fromhex(installer.magic))
    log.add(f"bytecode of the local wheel(s) reused from {installer.purelib}; {left} file(s) left to compile")
    if left:
        compile_dirs(installer.python, [str(sp)], log)


def _fill_source(pin: str, o: BuildOptions | None, options: str, tmp: Path, dest_name: str, python: str, prefix: Path,
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
    args = [*install_args(python, tmp / "tree", index), "--no-cache",
            *(["--no-binary", name] if o.no_binary else []),
            *([] if o.build_isolation else ["--no-build-isolation-package", name]), pin]
    env = dict(o.env)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([*filter(None, [o.env.get("PYTHONPATH")]), *path])
    run_uv(args, log, f"building {name} from source" if o.no_binary else f"installing {name}", env=env, tail=25)
    _finish_scanned(pin, tmp, (str(tmp / "tree"), str(prefix)), o, options, base / dest_name)
    bar.advance()


def _finish_scanned(pin: str, tmp: Path, old: tuple[str, ...], o: BuildOptions | None, options: str,
                    dest: Path) -> None:
    m, hits = _scan_entry(tmp / "tree", old)
    _finish_entry(pin, tmp, m, hits, old, o, options, dest)


def _finish_entry(pin: str, tmp: Path, m: Manifest, hits: list[PrefixHit], old: tuple[str, ...],
                  o: BuildOptions | None, options: str, dest: Path) -> None:
    """Record the entry's hashes and prefix-naming files, lock it, publish it."""
    for rel, fe in m.files.items():
        m.files[rel] = FileEntry(fe.sha256, fe.size, readonly_mode(fe.mode))  # as make_readonly will
    m.save(tmp / FILES)
    # Only text files are rewritten per stack (shebangs, direct_url.json). A compiled
    # extension that names the build's temp prefix does so in debug info (-I paths
    # under -g), which nothing reads at run time; a byte replacement of another length
    # would break the ELF, and copying it would cost the link. It is linked as is.
    atomic_write_json(tmp / ENTRY, {"pin": pin, "old": list(old), "options": options,
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
