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
read those bytes again.

Length (over ~400 lines): filling the cache (one uv call, the split along RECORD, the scan),
linking from it and the layout gc reads are one on-disk format, kept in one place.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sitestack.core.bytecode import pyc_paths
from sitestack.core.fsutil import atomic_write_json, file_lock, make_dirs, make_readonly, rmtree
from sitestack.core.manifest import FileEntry, Manifest, PrefixHit, scan
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


def _uv(args: list[str], log: BuildLog, what: str, stdin: str | None = None,
        env: Mapping[str, str] | None = None, tail: int | None = None) -> str:
    return run_logged([uv_bin(), *args], log, what, env=uv_env(dict(env or {})), stdin=stdin, tail=tail)


def no_binary_args(build: Mapping[str, BuildOptions]) -> list[str]:
    """uv's flags for packages that must come from their sdist (uv has no per-package form
    other than naming the package: ``--no-binary NAME``)."""
    return [a for name, o in sorted(build.items()) if o.no_binary for a in ("--no-binary", name)]


def resolve(requirements: Sequence[str], python: str, index: Sequence[str], log: BuildLog,
            build: Mapping[str, BuildOptions] | None = None) -> list[str]:
    """Exact pins for the whole set, resolved by uv for this interpreter."""
    out = _uv(["pip", "compile", "-", "--python", python, "--no-header", "--no-annotate", "--quiet", *index,
               *no_binary_args(build or {})],
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


def options_hash(opts: BuildOptions | None) -> str:
    """A source build's identity beyond its pin: no-binary and every env value."""
    if opts is None:
        return ""
    doc = json.dumps({"no_binary": opts.no_binary, "env": dict(sorted(opts.env.items()))}, sort_keys=True)
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


def ensure(pins: Sequence[str], python: str, prefix: Path, py_xy: str, index: Sequence[str],
           root: SiteRoot, log: BuildLog, build: Mapping[str, BuildOptions] | None = None) -> list[Entry]:
    """Every pin's entry, installing and compiling the missing ones.

    Pins named in `build` are built from source with their options and keyed by them."""
    build = build or {}
    base = cache_root(root)
    make_dirs(base)  # exact modes: the library may run under any umask
    tag = _tag(python)
    opts = {pin: build.get(pin_name(pin)) for pin in pins}
    names = {}
    for pin in pins:
        h = options_hash(opts[pin])
        names[pin] = f"{_safe(pin)}{'-src' if h else ''}-{_key(pin, tag, h)}"
    missing = [p for p in pins if not (base / names[p] / ENTRY).is_file()]
    if missing:
        with file_lock(root.locks / "pypi-cache.lock", what="the site's package cache"):
            clear_stale(base, ".tmp-", locked=True)  # we hold the lock: from killed builds
            missing = [p for p in missing if not (base / names[p] / ENTRY).is_file()]
            if missing:
                log.step(f"installing {len(missing)} new distribution(s) into the site cache")
                _populate(missing, names, opts, python, prefix, py_xy, index, base, log)
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


def _install_args(python: str, tree: Path, index: Sequence[str]) -> list[str]:
    # --compile-bytecode: uv's compiler (its own pool of the target python) beats one
    # compileall run over the same files by about a quarter.
    return ["pip", "install", "--no-deps", "--link-mode", "copy", "--compile-bytecode", "--prefix", str(tree),
            "--python", python, *index]


def _populate(missing: Sequence[str], names: dict[str, str], opts: Mapping[str, BuildOptions | None],
              python: str, prefix: Path, py_xy: str, index: Sequence[str], base: Path, log: BuildLog) -> None:
    temps: dict[str, Path] = {}
    split: dict[str, Path] = {}
    shared: Path | None = None
    try:
        wheels = [p for p in missing if opts[p] is None]
        sources = [p for p in missing if opts[p] is not None]
        with Progress(log, "installed into the site cache", len(missing), noun="distributions") as bar:
            if wheels:
                # make_temp, not temp_tree: it lives beside the per-pin temps, each published on
                # its own; the finally removes what is left, clear_stale(".tmp-") killed runs'.
                shared = make_temp(base, ".tmp-all-", 0o700)
                _uv([*_install_args(python, shared / "tree", index), *wheels], log,
                    f"installing {len(wheels)} distribution(s)")
                # Compiled (by uv) before the split, all at once; each .pyc moves with its source.
                split = _split(shared / "tree", py_xy, wheels, base)
                temps.update(split)
                bar.advance(len(split))
                for pin in wheels:
                    if pin not in split:  # no dist-info matched its name: install it alone
                        temps[pin] = make_temp(base, ".tmp-", 0o700)
                        _uv([*_install_args(python, temps[pin] / "tree", index), pin], log, f"installing {pin}")
                        bar.advance()
            for pin in sources:
                o = opts[pin]
                assert o is not None
                name = pin_name(pin)
                temps[pin] = make_temp(base, ".tmp-", 0o700)
                log.step(f"building {name} from source" if o.no_binary else f"installing {name} with its build env")
                # --no-cache: uv's cache keeps a wheel built from an sdist and would hand it
                # back whatever the env now says; this site cache is keyed by the env instead.
                args = [*_install_args(python, temps[pin] / "tree", index), "--no-cache",
                        *(["--no-binary", name] if o.no_binary else []), pin]
                _uv(args, log, f"building {name} from source" if o.no_binary else f"installing {name}",
                    env=o.env, tail=25)
                bar.advance()
        for pin, tmp in temps.items():
            old = (str(tmp / "tree"), str(prefix), *((str(shared / "tree"),) if shared else ()))
            m, hits = _scan_entry(tmp / "tree", old)
            for rel, fe in m.files.items():
                m.files[rel] = FileEntry(fe.sha256, fe.size, _readonly_mode(fe.mode))
            m.save(tmp / FILES)
            # Only text files are rewritten per stack (shebangs, direct_url.json). A compiled
            # extension that names the build's temp prefix does so in debug info (-I paths
            # under -g), which nothing reads at run time; a byte replacement of another length
            # would break the ELF, and copying it would cost the link. It is linked as is.
            atomic_write_json(tmp / ENTRY, {"pin": pin, "old": list(old), "options": options_hash(opts[pin]),
                                            "env": dict(opts[pin].env) if opts[pin] else {},  # type: ignore[union-attr]
                                            "rewrite": sorted(h.path for h in hits if h.kind == "text"),
                                            "binary": sorted(h.path for h in hits if h.kind != "text")})
            make_readonly(tmp)
            try:
                publish(tmp, base / names[pin])
            except OSError:
                rmtree(tmp)  # another build made it first
    finally:
        for tmp in temps.values():
            rmtree(tmp)
        if shared is not None:
            rmtree(shared)


def _scan_entry(tree: Path, old: Sequence[str]) -> tuple[Manifest, list[PrefixHit]]:
    """scan() for the files that name any `old` prefix, in ONE pass over the bytes: it looks
    for the prefixes' common parent (the site's .sitestack folder), and only the few files
    that hold it are read again for the prefixes themselves. Three needles cost three
    searches of every chunk, twice the hashing's own time."""
    common = os.path.commonpath(old) if old else ""
    if len(common) < 8:  # too short to be a useful filter ("/", "/tmp")
        return scan(tree, old, exclude=())
    m, maybe = scan(tree, [common], exclude=())
    needles = [o.encode() for o in old]
    hits = []
    for h in maybe:
        with open(tree / h.path, "rb") as f:
            data = f.read()
        if any(n in data for n in needles):
            hits.append(h)
    return m, hits


def _readonly_mode(mode: int) -> int:
    """The mode make_readonly gives a file (the entry is scanned before it is locked)."""
    mode = (mode & ~0o222) | 0o444
    return mode | 0o111 if mode & 0o100 else mode


def _split(tree: Path, py_xy: str, pins: Sequence[str], base: Path) -> dict[str, Path]:
    """Move each distribution's files (its RECORD) out of one shared install into its own
    temp entry; returns {pin: temp entry folder} for every pin whose dist-info was found."""
    sp = tree / "lib" / f"python{py_xy}" / "site-packages"
    by_name = {pin_name(p): p for p in pins}
    out: dict[str, Path] = {}
    if not sp.is_dir():
        return out
    from packaging.utils import canonicalize_name

    for info in sorted(sp.glob("*.dist-info")):
        pin = by_name.get(canonicalize_name(info.name[: -len(".dist-info")].rsplit("-", 1)[0]))
        record = info / "RECORD"
        if pin is None or pin in out or not record.is_file():
            continue
        tmp = make_temp(base, ".tmp-", 0o700)
        out[pin] = tmp
        with open(record, newline="", encoding="utf-8") as f:
            rels = [row[0] for row in csv.reader(f) if row]
        # Then whatever else sits in the dist-info (files only: its folders, e.g. licenses/,
        # may already exist in the entry from RECORD's files).
        rest = [str(p.relative_to(sp)) for p in info.rglob("*") if p.is_symlink() or not p.is_dir()]
        _move(str(tree), str(sp), str(tmp / "tree"), [*rels, *rest], py_xy)
    return out


def _move(tree: str, sp: str, dest_tree: str, rels: Sequence[str], py_xy: str) -> None:
    """Rename one distribution's files (RECORD paths, relative to site-packages) and the
    bytecode of its .py files from `tree` to `dest_tree`. Strings, one lstat per file and
    each folder made once: 10,000 files are moved in a fraction of a second."""
    made: set[str] = set()
    top = tree + os.sep

    def move(src: str, sub: str) -> None:
        parent = os.path.dirname(dest := os.path.join(dest_tree, sub))
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.rename(src, dest)

    for rel in rels:
        src = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(sp, rel))
        if not src.startswith(top):
            continue  # outside the prefix: nothing a stack could link
        try:
            if stat.S_ISDIR(os.lstat(src).st_mode):
                continue  # folders are made as needed
        except FileNotFoundError:
            continue  # listed twice, or already moved
        sub = src[len(top):]
        move(src, sub)
        if sub.endswith(".py"):
            for pyc in pyc_paths(sub, py_xy):  # compiled in the shared tree
                with contextlib.suppress(FileNotFoundError):  # not compiled at this -O level
                    move(os.path.join(tree, pyc), pyc)


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
