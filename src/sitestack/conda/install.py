"""Conda stacks: solve and install a `[conda]` spec with py-rattler, lock it, relocate it.

The prefix is installed in the build folder *as if* at the published path (rattler's
`alternative_target_prefix`), so every prefix placeholder already names the final prefix.
Packages are extracted once into a site-wide cache (ROOT/.sitestack/pkgs) and hardlinked
from there, as conda does: stacks that share packages share inodes. Published stacks are
made read-only file by file, which makes the shared cache files read-only too; nothing
may write into a hardlinked file in place afterwards (sitestack always replaces files as
new inodes, and `snapshot_conda_files` / `check_conda_files` catch anyone who did).

Relocation (clones, staging) reads conda-meta: files with a text placeholder are rewritten,
files with a binary placeholder are rewritten inside the NUL padding conda left when it
installed them, so a new prefix may be as long as the package's placeholder (conda-build:
255 bytes) -- checked for every file before anything is written.

py-rattler is imported lazily: only conda stacks need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sitestack import TYPE_CHECKING
from sitestack.conda.records import (
    LOCK_NAME,
    CondaResult,
    first_lines,
    hex_digest,
    load_rattler,
    to_records,
)
from sitestack.core.dists import python_dists
from sitestack.core.fsutil import make_dirs
from sitestack.core.log import StepLog
from sitestack.errors import BuildError, SpecError, UsageError, VerifyError

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot
    from sitestack.site.spec import CondaSpec, StackSpec

PKGS = "pkgs"  # ROOT/.sitestack/pkgs: the shared package cache
REPODATA = "repodata"  # ROOT/.sitestack/repodata: the gateway's repodata cache (URL channels)


LogLike = StepLog | Callable[[str], None] | None


def _say(log: LogLike, msg: str, *, detail: bool = False) -> None:
    if log is None:
        return
    if isinstance(log, StepLog):
        (log.add if detail else log.step)(msg)
    else:
        log(msg)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- channels and specs --------------------------------------------------------------------

def channel_source(channel: str) -> str:
    """A channel as rattler takes it: a URL, or an absolute local folder (checked here)."""
    if "://" in channel:
        return channel
    p = Path(channel).expanduser()
    if not p.is_dir():
        raise BuildError(f"conda channel {channel} cannot be read: no such folder")
    if not (p / "noarch" / "repodata.json").is_file():
        raise BuildError(
            f"conda channel {channel} cannot be read: it has no noarch/repodata.json "
            "(index it, e.g. with `rattler-index fs` or rattler.index.index_fs)"
        )
    return str(p.resolve())


def parse_specs(specs: Sequence[str]) -> list[Any]:
    """MatchSpecs, strictly parsed; a bad one is a SpecError naming conda.packages[i]."""
    rattler = load_rattler()
    out = []
    for i, s in enumerate(specs):
        try:
            out.append(rattler.MatchSpec(s, strict=True))
        except Exception as e:  # rattler.InvalidMatchSpecError and friends
            raise SpecError(f"conda.packages[{i}]", f"invalid match spec {s!r}: {e}") from None
    return out


def _solve(channels: Sequence[str], specs: Sequence[str], repodata_cache: Path | None) -> list[Any]:
    rattler = load_rattler()
    from rattler.exceptions import GatewayError, SolverError

    sources = [channel_source(c) for c in channels]
    matchspecs = parse_specs(specs)
    gateway = rattler.Gateway(cache_dir=repodata_cache) if repodata_cache else rattler.Gateway()
    try:
        return list(_run(rattler.solve(sources=sources, specs=matchspecs, gateway=gateway)))
    except SolverError as e:
        reason = str(e).replace("Cannot solve the request because of: ", "")
        raise BuildError(
            "the conda packages cannot be installed together: "
            + ", ".join(repr(s) for s in specs) + "\n" + first_lines(reason, 30),
            hint="relax or change the conflicting specs in [conda] packages",
        ) from None
    except GatewayError as e:
        raise BuildError(
            f"a conda channel cannot be reached or read ({', '.join(channels)}):\n" + first_lines(str(e))
        ) from None


# -- install -------------------------------------------------------------------------------

def _file_url_path(url: str) -> Path | None:
    u = urllib.parse.urlparse(url)
    if u.scheme != "file":
        return None
    return Path(urllib.parse.unquote(u.path))


def _cached_sha(cache_dir: Path, file_name: str) -> str | None:
    """The sha256 rattler recorded for an extracted cache entry (NAME-VER-BUILD.lock)."""
    stem = file_name.removesuffix(".conda").removesuffix(".tar.bz2")
    lock = cache_dir / f"{stem}.lock"
    try:
        data = lock.read_bytes()
    except OSError:
        return None
    if len(data) == 40 and (cache_dir / stem / "info" / "index.json").is_file():
        return data[8:].hex()
    return None


def verify_local_packages(repodata: Iterable[Any], cache_dir: Path) -> None:
    """rattler checks the sha256 of what it downloads, not of file:// packages: we do."""
    for r in repodata:
        path = _file_url_path(str(r.url))
        want = hex_digest(r.sha256)
        if path is None or not want:
            continue
        if _cached_sha(cache_dir, str(r.file_name)) == want:
            continue  # already extracted from an archive with this very hash
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as e:
            raise BuildError(f"conda package {r.url} cannot be read: {e.strerror or e}") from None
        if h.hexdigest() != want:
            raise VerifyError(
                f"conda package {r.file_name} does not match its channel's index: sha256 is "
                f"{h.hexdigest()}, expected {want} ({r.url})",
                hint="re-index the channel if the package was rebuilt on purpose",
            )


@contextlib.contextmanager
def _no_group_other_write() -> Iterator[None]:
    """The caller's umask plus 022 while rattler runs.

    rattler makes the cache entries, their lock files and the prefix's folders with the
    process umask (0777/0666 under `umask 000`) and takes no mode: a library caller's loose
    umask would leave the site's shared package cache writable by anyone, so every stack
    built later could link a file someone swapped in. Only ever tightened, and put back.
    """
    old = os.umask(0o022)
    os.umask(old | 0o022)
    try:
        yield
    finally:
        os.umask(old)


def _install(
    repodata: Sequence[Any], build_prefix: Path, final_prefix: Path, cache_dir: Path,
    specs: Sequence[Any] | None, installed: Sequence[Any] = (),
) -> None:
    rattler = load_rattler()
    verify_local_packages(repodata, cache_dir)
    had_tag = (build_prefix / "CACHEDIR.TAG").exists()
    try:
        with _no_group_other_write():
            _run(rattler.install(
                list(repodata), target_prefix=build_prefix, cache_dir=cache_dir,
                installed_packages=list(installed), alternative_target_prefix=final_prefix,
                show_progress=False, execute_link_scripts=False,
                # py-rattler 0.28's install() hands these to the FFI layer unwrapped.
                requested_specs=[getattr(m, "_match_spec", m) for m in specs] if specs else None,
            ))
    except Exception as e:
        msg = str(e)
        if "hash mismatch" in msg:
            raise VerifyError("a conda package does not match its channel's index:\n" + first_lines(msg)) from None
        if "fetch" in msg or "request" in msg or "download" in msg:
            raise BuildError("a conda package cannot be downloaded:\n" + first_lines(msg)) from None
        raise BuildError("installing the conda packages failed:\n" + first_lines(msg)) from None
    # rattler marks the prefix as a cache folder, which would hide a stack from backups.
    if not had_tag:
        (build_prefix / "CACHEDIR.TAG").unlink(missing_ok=True)


def _result(
    repodata: Sequence[Any], build_prefix: Path, channels: Sequence[str], specs: Sequence[str]
) -> CondaResult:
    rattler = load_rattler()
    pys = [r for r in repodata if r.name.normalized == "python"]
    if not pys:
        raise BuildError(
            "the conda packages do not include python: add e.g. 'python 3.11.*' to [conda] packages"
        )
    version = str(pys[0].version)
    xy = ".".join(version.split(".")[:2])
    exe = f"bin/python{xy}"
    if not (build_prefix / exe).exists():
        raise BuildError(f"the conda python package {version} has no {exe}")
    provided = python_dists(build_prefix, xy)
    return CondaResult(
        python_exe=exe, python_version=version, records=to_records(repodata),
        provides=frozenset(provided), provided_versions=provided,
        channels=tuple(channels), specs=tuple(specs), platform=str(rattler.Subdir.current()),
        repodata=tuple(repodata),
    )


def solve_and_install(
    spec_conda: CondaSpec, build_prefix: Path, final_prefix: Path, cache_dir: Path,
    log: LogLike = None, *, repodata_cache: Path | None = None,
) -> CondaResult:
    """Solve [conda] for this platform + noarch and install it into build_prefix as if at final_prefix."""
    build_prefix, final_prefix, cache_dir = Path(build_prefix), Path(final_prefix), Path(cache_dir)
    specs = list(spec_conda.packages)
    _say(log, f"solving {len(specs)} conda spec(s) from {len(spec_conda.channels)} channel(s)")
    repodata = _solve(spec_conda.channels, specs, repodata_cache)
    _say(log, "conda packages: " + ", ".join(
        f"{r.name.normalized}={r.version}={r.build}" for r in repodata), detail=True)
    _say(log, f"installing {len(repodata)} conda package(s) (cache {cache_dir})")
    make_dirs(cache_dir)
    _install(repodata, build_prefix, final_prefix, cache_dir, parse_specs(specs))
    return _result(repodata, build_prefix, spec_conda.channels, specs)


def install_from_lock(
    lock_path: Path, build_prefix: Path, final_prefix: Path, cache_dir: Path, log: LogLike = None,
) -> tuple[CondaResult, dict[str, str]]:
    """Rebuild exactly the locked set (no solve). Returns the result and the PyPI pins."""
    from sitestack.conda.lock import read_lock_full

    repodata, pins, channels, specs = read_lock_full(Path(lock_path))
    _say(log, f"installing {len(repodata)} locked conda package(s) from {lock_path}")
    make_dirs(Path(cache_dir))
    _install(repodata, Path(build_prefix), Path(final_prefix), Path(cache_dir), None)
    return _result(repodata, Path(build_prefix), channels, specs), pins


def pypi_conflicts(requirements: Iterable[str], provided: Mapping[str, str]) -> list[str]:
    """Requirements naming a conda-provided distribution at a version conda did not install."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = []
    for req in requirements:
        r = Requirement(req)
        name = canonicalize_name(r.name)
        if name in provided and r.specifier and not r.specifier.contains(provided[name], prereleases=True):
            out.append(f"{req} (conda installed {name} {provided[name]})")
    return out


# -- an existing environment: conda install / remove in a clone --------------------------

def _spec_name(spec: Any) -> str:
    return str(spec.name.normalized) if spec.name is not None else ""


def user_specs(specs: Sequence[str]) -> list[Any]:
    """MatchSpecs from a user's command line; a bad one is a one-line UsageError."""
    rattler = load_rattler()
    out = []
    for s in specs:
        try:
            out.append(rattler.MatchSpec(s, strict=True))
        except Exception as e:  # rattler.InvalidMatchSpecError and friends
            raise UsageError(f"{s!r} is not a package spec: {e}; nothing was installed") from None
        if out[-1].name is None:
            raise UsageError(f"{s!r} names no package; nothing was installed")
    return out


def _dependents(installed: Sequence[Any], names: set[str]) -> set[str]:
    """Installed packages that need one of `names`, directly or through others."""
    needs = {str(r.name.normalized): {d.split()[0] for d in r.depends} for r in installed}
    out: set[str] = set()
    grew = True
    while grew:
        grew = False
        for name, deps in needs.items():
            if name not in out and name not in names and deps & (names | out):
                out.add(name)
                grew = True
    return out


def install_into(prefix: Path, channels: Sequence[str], add: Sequence[str], remove: Sequence[str],
                 cache_dir: Path, command: str) -> tuple[list[str], list[str]]:
    """`conda install ADD` / `conda remove REMOVE` in an existing environment (a clone of a
    conda stack), as conda does them: every installed package stays (locked at its version)
    unless ADD names it; REMOVE takes the packages named and those that need them (conda's
    "will be REMOVED" list), never what they needed. Solved from `channels` (the stack's);
    rattler links and unlinks the difference and writes conda-meta; conda-meta/history gets
    the entry conda would write. Returns what was added and removed, as
    `channel::name-version-build`."""
    rattler = load_rattler()
    from rattler.exceptions import GatewayError, SolverError

    installed = [rattler.PrefixRecord.from_path(p) for p in sorted((prefix / "conda-meta").glob("*.json"))]
    have = {str(r.name.normalized) for r in installed}
    adds = user_specs(add)
    drops = {_spec_name(m) for m in user_specs(remove)}
    missing = sorted(drops - have)
    if missing:
        raise UsageError(f"{', '.join(missing)} is not installed in {prefix} as a conda package; "
                         "nothing was removed")
    drops |= _dependents(installed, drops)
    named = drops | {_spec_name(m) for m in adds}
    specs = sorted(have - named) + list(add)
    locked = [r for r in installed if str(r.name.normalized) not in named]
    try:
        solved = list(_run(rattler.solve(sources=[channel_source(c) for c in channels], specs=specs,
                                         gateway=rattler.Gateway(), locked_packages=locked)))
    except SolverError as e:
        reason = str(e).replace("Cannot solve the request because of: ", "")
        raise BuildError(f"{command}: the request cannot be satisfied from {', '.join(channels)}; "
                         "nothing was changed\n" + first_lines(reason, 20)) from None
    except GatewayError as e:
        raise BuildError(f"a conda channel cannot be reached or read ({', '.join(channels)}):\n"
                         + first_lines(str(e))) from None
    kept = sorted(drops & {str(r.name.normalized) for r in solved})
    if kept:
        raise BuildError(f"{', '.join(kept)} cannot be removed: other packages in {prefix} need it; "
                         "nothing was removed")
    make_dirs(cache_dir)
    _install(solved, prefix, prefix, cache_dir, [rattler.MatchSpec(s) for s in specs], installed)
    before = {f"{r.channel}::{r.name.normalized}-{r.version}-{r.build}" for r in installed}
    after = {f"{r.channel}::{r.name.normalized}-{r.version}-{r.build}" for r in solved}
    added, removed = sorted(after - before), sorted(before - after)
    from sitestack.conda.records import append_history

    append_history(prefix, command, added, removed, list(remove) if remove else list(add), remove=bool(remove))
    return added, removed


# -- the build's entry point ---------------------------------------------------------------

def site_cache(root: SiteRoot) -> Path:
    return root.meta / PKGS


def build_conda_prefix(
    spec: StackSpec, tmp: Path, final: Path, root: SiteRoot, log: LogLike = None,
    *, from_lock: Path | None = None,
) -> tuple[str, str, dict[str, object]]:
    """Install the [conda] part of `spec` into `tmp` (as if at `final`) and write the lock.

    Returns (python x.y.z, x.y, extra) where extra goes into stack.json and carries
    "conda_provides" (canonical Python names the PyPI layer must not install again).
    """
    from sitestack.core.layout import records_dir

    assert spec.conda is not None or from_lock is not None
    cache = site_cache(root)
    if from_lock is not None:
        result, _pins = install_from_lock(from_lock, tmp, final, cache, log)
    else:
        assert spec.conda is not None
        result = solve_and_install(spec.conda, tmp, final, cache, log,
                                   repodata_cache=root.meta / REPODATA)
    rec = records_dir(tmp)
    make_dirs(rec)
    from sitestack.conda.lock import write_lock

    write_lock(rec / LOCK_NAME, result)
    return result.python_version, result.python_xy, result.stack_json()
