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
links the build instead of compiling again.

The cache is five modules: build/cacheentry.py (one entry on disk: its name, records and
key), build/cachefill.py (installing the missing pins into new entries), build/cacheuv.py
(how both run uv), build/cachelink.py (linking entries into a stack, on every CPU), and this
one (the cache as a whole: resolving, choosing entries, guessing them before the resolve is
back, the layout gc reads).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.build.cacheentry import (
    ENTRY,
    Entry,
    entry_key,
    is_wheel_file,
    load_entry,
    options_hash,
    pin_name,
    safe_name,
)
from sitestack.build.cachefill import Installer, fill
from sitestack.build.cachelink import LinkPlan, LinkResult, link, prepare
from sitestack.build.cacheuv import run_uv
from sitestack.core.fsutil import file_lock, make_dirs
from sitestack.core.publish import clear_stale

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot
    from sitestack.core.log import BuildLog
    from sitestack.site.spec import BuildOptions

__all__ = ["Entry", "Installer", "LinkPlan", "LinkResult", "cache_root", "discard", "ensure", "entries", "entry_files",
           "guess", "leftovers", "link", "prepare", "resolve", "use_lock", "uv_cache", "uv_caches"]


def cache_root(root: SiteRoot) -> Path:
    return root.meta / "pypi"


def uv_cache(root: SiteRoot) -> Path:
    """The site's own uv cache, beside the package cache (see cacheuv.install_args)."""
    return _make_uv_cache(cache_root(root))


def _make_uv_cache(base: Path) -> Path:
    """This user's uv cache folder, private (0700): uv makes its lock files 0666 on purpose,
    for users who share a cache; this one is never shared, and its files reach stacks only
    as the entries' hardlinks, whose modes are the entries' own."""
    path = _uv_cache(base)
    make_dirs(path.parent)
    make_dirs(path, 0o700)
    st = os.lstat(path)
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)  # made by an older sitestack, or by uv itself
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


def no_binary_args(build: Mapping[str, BuildOptions]) -> list[str]:
    """uv's flags for packages that must come from their sdist (uv has no per-package form
    other than naming the package: ``--no-binary NAME``)."""
    return [a for name, o in sorted(build.items()) if o.no_binary for a in ("--no-binary", name)]


def resolve(requirements: Sequence[str], python: str, index: Sequence[str], log: BuildLog,
            build: Mapping[str, BuildOptions] | None = None, cache_dir: Path | None = None) -> list[str]:
    """Exact pins for the whole set, resolved by uv for this interpreter (`cache_dir`: the
    site's uv cache, whose index pages the install then reuses)."""
    out = run_uv(["pip", "compile", "-", "--python", python, "--no-header", "--no-annotate", "--quiet", *index,
               *no_binary_args(build or {}), *(["--cache-dir", str(cache_dir)] if cache_dir else [])],
              log, "resolving packages", stdin="\n".join(requirements) + "\n")
    return [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _tag(python: str) -> str:
    r = subprocess.run([python, "-I", "-c", "import sys, sysconfig; print(sys.implementation.cache_tag, "
                        "sysconfig.get_platform())"], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _plan(pins: Sequence[str], build: Mapping[str, BuildOptions], tag: str
          ) -> tuple[dict[str, BuildOptions | None], dict[str, str], dict[str, str]]:
    """Each pin's build options, their hash, and its entry's folder name."""
    opts = {pin: build.get(pin_name(pin)) for pin in pins}
    hashes = {pin: options_hash(opts[pin], pins) for pin in pins}
    names = {pin: f"{safe_name(pin)}{'-src' if h else ''}-{entry_key(pin, tag, h)}" for pin, h in hashes.items()}
    return opts, hashes, names


def guess(pins: Sequence[str], root: SiteRoot, build: Mapping[str, BuildOptions] | None, tag: str) -> list[Entry]:
    """The entries of `pins` (what the resolve is expected to give: cachelink.prepare), if the
    cache holds every one; else none. Call under the use-lock, as for ensure."""
    base = cache_root(root)
    try:  # the pins come from a record on disk: a line that is no pin guesses nothing
        names = _plan(pins, build or {}, tag)[2]
        paths = [base / names[p] for p in pins]
        if not pins or not all((path / ENTRY).is_file() for path in paths):
            return []
        return [load_entry(path) for path in paths]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def ensure(pins: Sequence[str] | Callable[[], Sequence[str]], python: str, prefix: Path, py_xy: str,
           index: Sequence[str], root: SiteRoot, log: BuildLog, build: Mapping[str, BuildOptions] | None = None, *,
           installer: Installer | None = None, ready: Callable[[], object] | None = None,
           early: Sequence[str] = ()) -> list[Entry]:
    """Every pin's entry, installing and compiling the missing ones.

    Pins named in `build` are built from source with their options and keyed by them, by
    the stack's own `python` (their C code sees its sysconfig) once `ready()` returns, each
    beside the one uv call for the wheels. `installer` may install the wheels while the
    stack's python is still being copied.

    `pins` may be the resolve itself, still to run; then the local wheels in `early`, whose
    entries need no resolve (the stdlib's pip), start filling before it, beside the resolve
    and the downloads (their bytecode mostly the source interpreter's own: reusepyc)."""
    build = build or {}
    base = cache_root(root)
    make_dirs(base)  # exact modes: the library may run under any umask
    tag = installer.tag if installer and installer.tag else _tag(installer.python if installer else python)

    def plan(pins: Sequence[str]) -> tuple[dict[str, BuildOptions | None], dict[str, str], dict[str, str]]:
        return _plan(pins, build, tag)

    def run_fill(missing: list[str], plans: tuple[dict[str, BuildOptions | None], dict[str, str], dict[str, str]],
                 tty: bool | None = None) -> None:
        opts, hashes, names = plans
        fill(missing, names, opts, python, prefix, py_xy, index, base, log, installer, ready,
             hashes=hashes, uv_cache=_make_uv_cache(base), tty=tty)

    # A local wheel's entry name is its file's name and content: the same whatever pin text
    # the resolve then gives it.
    first = [p for p in early if is_wheel_file(p) and build.get(pin_name(p)) is None]
    first_plan = plan(first)
    first_names = first_plan[2]
    first_missing = [p for p in first if not (base / first_names[p] / ENTRY).is_file()]
    done: set[str] = set()  # entry names filled (or being filled) by the early fill
    with contextlib.ExitStack() as stack:
        locked: list[bool] = []

        def lock() -> None:
            # Once: a second flock of the same file from this process would wait for itself.
            if not locked:
                stack.enter_context(file_lock(root.locks / "pypi-cache.lock", what="the site's package cache"))
                clear_stale(base, ".tmp-", locked=True)  # we hold the lock: from killed builds
                locked.append(True)

        early_job = None
        if first_missing and callable(pins):
            lock()
            first_missing = [p for p in first_missing if not (base / first_names[p] / ENTRY).is_file()]
            if first_missing:
                log.step(f"installing {len(first_missing)} local wheel(s) into the site cache during the resolve")
                pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
                early_job = pool.submit(run_fill, first_missing, first_plan, False)
                done = {first_names[p] for p in first_missing}
        try:
            pins = list(pins() if callable(pins) else pins)
            opts, hashes, names = plan(pins)
            missing = [p for p in pins if names[p] not in done and not (base / names[p] / ENTRY).is_file()]
            if missing:
                lock()
                missing = [p for p in missing if not (base / names[p] / ENTRY).is_file()]
                if missing:
                    log.step(f"installing {len(missing)} new distribution(s) into the site cache")
                    run_fill(missing, (opts, hashes, names))
        finally:
            if early_job is not None:
                early_job.exception()  # waited for before the lock is let go (raises nothing)
    if early_job is not None:
        early_job.result()  # its error, once the rest succeeded
    new = [p for p in pins if p in missing or names[p] in done]
    hits = len(pins) - len(new)
    log.add(f"site cache: {hits} hit(s), {len(new)} new: " + ", ".join(
        f"{p} -> {names[p]}" + (" (new)" if p in new else "") for p in pins))
    return [load_entry(base / names[p]) for p in pins]


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
