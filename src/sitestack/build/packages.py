"""A PyPI stack's packages: the interpreter copied while uv installs, from the site cache.

`copy_and_install` runs the copy of the interpreter (build/interpreter.py) beside the
resolve and the wheels' install (build/pkgcache.py), `install_packages` picks the site
cache or a plain uv install (conda stacks' PyPI layer), and `Installed` carries what the
later steps of build/stack.py need not redo (known hashes, compiled site-packages).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sitestack.build.interpreter import SourcePython, copy_interpreter
from sitestack.core.fsutil import shared_lock
from sitestack.core.layout import SiteRoot
from sitestack.core.log import BuildLog
from sitestack.core.manifest import FileEntry
from sitestack.core.uvtool import index_args, run_logged, uv_bin, uv_env
from sitestack.site.spec import StackSpec


@dataclass
class Installed:
    """What install_packages leaves for the later steps."""

    # Files hardlinked from the site cache, with the hashes recorded there: not read again.
    known: dict[str, FileEntry] = field(default_factory=dict)
    # Every file in site-packages came compiled from the cache: no bytecode check needed there.
    site_packages_compiled: bool = False
    since_ns: int = 0  # a known file changed after this is hashed again after all
    # Every other file the install wrote (rewritten or copied): what the build hashes itself.
    written: list[str] = field(default_factory=list)


def copy_and_install(spec: StackSpec, source: SourcePython, tmp: Path, final: Path, root: SiteRoot,
                      log: BuildLog, installed: Installed) -> dict[str, str]:
    """Copy the interpreter while uv resolves and installs the wheels with the source one.

    uv needs no more of the stack's own python than its version and platform, which the
    source has too (its scripts are made to name the stack's python, cachefill._retarget);
    the copy (~1.5 s) then runs during the resolve and the downloads instead of before
    them. Source builds and the link wait for it. Leaving this function, the copy is done
    whatever happened: a failed build's folder is removed only after it."""
    log.step(f"copying Python {source.version} from {source.base_prefix} while uv installs the packages")
    copied: dict[str, FileEntry] = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        copy = pool.submit(copy_interpreter, source, tmp, final, copied)
        packages = install_packages(spec, tmp, source.xy, log, root=root, installed=installed,
                                    source=source, copied=copy.result)
        rewritten = copy.result()
    # Hashed by the copy: the stdlib is not read again for the manifest.
    installed.known = {**copied, **installed.known}
    installed.written += [r for r in rewritten if r not in installed.known]
    return packages


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
        inst = pkgcache.Installer(str(source.executable), str(source.stdlib), source.tag,
                                  source.purelib, source.magic) if source else None
        # Shared use-lock from choosing entries to linking them: `gc` never removes one between.
        with shared_lock(pkgcache.use_lock(root), what="the site's package cache"), \
                ThreadPoolExecutor(max_workers=1) as ahead:
            def resolve() -> list[str]:
                return pkgcache.resolve(reqs, inst.python if inst else py, index, log, p.build,
                                        pkgcache.uv_cache(root))

            # While the resolve waits on the index: plan the link of what it most likely gives
            # (the newest version of the same [packages]) and make its folders (cachelink).
            guessed = pkgcache.guess(_previous_pins(root, spec, reqs), root, p.build, inst.tag) \
                if inst and inst.tag else []
            plan = ahead.submit(pkgcache.prepare, guessed, prefix, copied or (lambda: None)) if guessed else None
            # The stdlib's pip wheel needs no resolve: its entry is filled during it.
            entries = pkgcache.ensure(resolve, py, prefix, py_xy, index, root, log, p.build,
                                      installer=inst, ready=copied, early=reqs)
            if copied is not None:
                copied()  # the stack's python and stdlib are in place before anything is linked
            since = time.time_ns() - 2_000_000_000  # coarse file clock: see finish()
            try:
                ready = plan.result() if plan is not None else None
            except OSError as e:  # an entry it read went wrong: link() plans for itself
                log.add(f"the link planned during the resolve failed ({e}); planned again")
                ready = None
            if ready is not None:
                log.add(f"link planned ahead for {len(guessed)} entries: "
                        + ("the ones the resolve gave" if ready.entries == tuple(e.path for e in entries)
                           else "the resolve gave others"))
            res = pkgcache.link(entries, prefix, ready=ready)
        if installed is not None:
            installed.known, installed.since_ns, installed.written = res.known, since, list(res.copies)
            installed.site_packages_compiled = not res.rewritten_py
        log.step(f"linked {len(entries)} distribution(s) from the site cache ({res.linked} files shared, {res.copied} copied)")
        # Each entry is a wheel's dist-info: the names and versions need no `uv pip list`
        # start (which also reads .egg-info, as a conda prefix below may hold).
        from sitestack.core.dists import python_dists

        return python_dists(prefix, py_xy)
    if copied is not None:
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


def _previous_pins(root: SiteRoot, spec: StackSpec, reqs: Sequence[str]) -> list[str]:
    """The pins of the newest published version of this name, if it was built from the same
    [packages] (lock.txt; a local wheel of `reqs` of the same name and version pins itself,
    as the resolve gives it); else none. Only a guess: a wrong one costs a few empty folders."""
    from sitestack.build.cacheentry import is_wheel_file, pin_name
    from sitestack.core.layout import newest_records
    from sitestack.core.records import LOCK, SPEC
    from sitestack.errors import SitestackError
    from sitestack.site.spec import parse_spec

    rec = newest_records(root, spec.name)
    if rec is None:
        return []
    try:
        if parse_spec((rec / SPEC).read_text(encoding="utf-8")).packages != spec.packages:
            return []
        lines = (rec / LOCK).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError, SitestackError):
        return []
    wheels = {(pin_name(w), w.rsplit("/", 1)[-1].split("-")[1]): w for w in reqs if is_wheel_file(w)}
    pins = []
    for line in lines:
        name, sep, version = line.partition("==")
        if not sep:
            return []
        pins.append(wheels.get((name, version), line))
    return pins


def _has_dist(prefix: Path, py_xy: str, name: str) -> bool:
    sp = prefix / "lib" / f"python{py_xy}" / "site-packages"
    return any(sp.glob(f"{name}-*.dist-info"))
