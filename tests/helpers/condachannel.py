"""A local conda channel of real packages, built without conda-build.

Packages (subdir = the host's, e.g. linux-64, plus noarch):
  python 3.X.Y      a relocatable CPython (copied by sitestack.interpreter), text placeholders
                    in sysconfigdata / Makefile / python-config; .conda (zstd)
  pyhello 1.0, 2.0  noarch: python, with a dist-info and an entry point `pyhello`;
                    2.0 needs textpfx, so the solver has a real choice; .conda
  textpfx 1.0       a TEXT prefix placeholder in etc/textpfx.conf and bin/textpfx; .tar.bz2
  binpfx 1.0        a BINARY prefix placeholder: a C program (gcc) that prints its prefix
  toonew 1.0        needs python >=3.99, for unsatisfiable-spec tests

Every package has info/index.json, info/paths.json (prefix_placeholder + file_mode for
files that carry the build prefix, as conda-build writes them) and info/files. The channel
is indexed with rattler.index.index_fs.
"""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.stacks import PY_XY

# The channel's python is the interpreter running the tests (as every other test stack is),
# so tests name its X.Y through these instead of a literal version.
CONDA_PYTHON = f"python {PY_XY}.*"

# conda-build's placeholder is the build's host prefix padded with "_placehold" to 255
# bytes; rattler only needs paths.json to name it. Binary files keep this much room.
PLACEHOLDER = ("/opt/conda-bld/sitestack_1700000000000/_h_env" + "_placehold" * 30)[:255]


def host_subdir() -> str:
    import rattler

    return str(rattler.Subdir.current())


@dataclass
class PkgFile:
    path: str  # relative, forward slashes
    data: bytes = b""
    mode: int = 0o644
    link: str | None = None  # symlink target
    placeholder: bool = False
    binary: bool = False


@dataclass
class Package:
    name: str
    version: str
    subdir: str
    files: list[PkgFile]
    depends: list[str] = field(default_factory=list)
    build: str = "0"
    build_number: int = 0
    noarch: str | None = None
    link_json: dict[str, object] | None = None

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _info_files(pkg: Package) -> dict[str, bytes]:
    index = {
        "name": pkg.name, "version": pkg.version, "build": pkg.build,
        "build_number": pkg.build_number, "depends": pkg.depends, "license": "MIT",
        "subdir": pkg.subdir, "timestamp": 1700000000000,
    }
    if pkg.noarch:
        index["noarch"] = pkg.noarch
    else:
        arch, _, plat = pkg.subdir.partition("-")
        index["platform"], index["arch"] = arch, {"64": "x86_64"}.get(plat, plat)
    paths = []
    for f in sorted(pkg.files, key=lambda f: f.path):
        entry: dict[str, object] = {"_path": f.path}
        if f.link is not None:
            entry.update(path_type="softlink", size_in_bytes=len(f.link.encode()),
                         sha256=_sha(f.link.encode()))
        else:
            entry.update(path_type="hardlink", sha256=_sha(f.data), size_in_bytes=len(f.data))
            if f.placeholder:
                entry["prefix_placeholder"] = PLACEHOLDER
                entry["file_mode"] = "binary" if f.binary else "text"
        paths.append(entry)
    out = {
        "info/index.json": json.dumps(index, indent=2).encode(),
        "info/paths.json": json.dumps({"paths": paths, "paths_version": 1}, indent=2).encode(),
        "info/files": "".join(f.path + "\n" for f in sorted(pkg.files, key=lambda f: f.path)).encode(),
        "info/about.json": json.dumps({"summary": f"{pkg.name} (sitestack test channel)"}).encode(),
    }
    if pkg.link_json is not None:
        out["info/link.json"] = json.dumps(pkg.link_json).encode()
    return out


def _tar(members: Iterable[PkgFile]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for f in members:
            ti = tarfile.TarInfo(f.path)
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 1700000000, 0, 0, "", ""
            if f.link is not None:
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, f.link, 0o777
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(f.data), f.mode
                tf.addfile(ti, io.BytesIO(f.data))
    return buf.getvalue()


def write_package(pkg: Package, channel: Path, fmt: str = ".conda") -> Path:
    """Write one package into channel/SUBDIR/ as .conda (zstd) or .tar.bz2."""
    out_dir = channel / pkg.subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    info = [PkgFile(p, d) for p, d in _info_files(pkg).items()]
    dest = out_dir / (pkg.stem + fmt)
    if fmt == ".tar.bz2":
        dest.write_bytes(bz2.compress(_tar(info + pkg.files), 5))
        return dest
    import zstandard

    big = sum(len(f.data) for f in pkg.files) > (8 << 20)
    cctx = zstandard.ZstdCompressor(level=1 if big else 3, threads=2 if big else 0)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        zf.writestr(f"pkg-{pkg.stem}.tar.zst", cctx.compress(_tar(pkg.files)))
        zf.writestr(f"info-{pkg.stem}.tar.zst", cctx.compress(_tar(info)))
    return dest


def files_from_dir(root: Path, placeholder: str | None = None) -> list[PkgFile]:
    """Every file and symlink under root; files containing `placeholder` are marked text."""
    out: list[PkgFile] = []
    needle = placeholder.encode() if placeholder else None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if os.path.islink(full):
                out.append(PkgFile(rel, link=os.readlink(full)))
                continue
            data = Path(full).read_bytes()
            mode = os.stat(full).st_mode & 0o777
            out.append(PkgFile(rel, data, mode, placeholder=bool(needle and needle in data)))
    return out


# -- the packages ---------------------------------------------------------------------------

def _compile_for_archive(stage: Path, xy: str) -> None:
    """Ship valid stdlib bytecode, as conda-forge's python does: the archive stores every
    file with mtime 1700000000 (see _tar), so the .pyc headers must name that mtime."""
    import subprocess

    for py in stage.rglob("*.py"):
        os.utime(py, (1700000000, 1700000000))
    subprocess.run([str(stage / "bin" / f"python{xy}"), "-E", "-s", "-m", "compileall", "-q", "-f", "-j", "0",
                    str(stage / "lib" / f"python{xy}")], capture_output=True, check=False)


def python_package(source: str | os.PathLike[str], subdir: str) -> tuple[Package, str]:
    """A `python` package from a local CPython (version request or executable path)."""
    from sitestack.build.interpreter import copy_interpreter, find_python

    src = find_python(str(source))
    with tempfile.TemporaryDirectory(prefix="ss-condapy-") as tmp:
        stage = Path(tmp) / "p"
        # Text files name the placeholder, as conda-build leaves them.
        copy_interpreter(src, stage, final_prefix=Path(PLACEHOLDER))
        _compile_for_archive(stage, src.xy)
        files = files_from_dir(stage, PLACEHOLDER)
    # Binaries may carry the source's compiled-in prefix; that is not a placeholder.
    for f in files:
        if f.placeholder and b"\0" in f.data[:8192]:
            f.placeholder = False
    pkg = Package("python", src.version, subdir, files, build="h_sitestack_0")
    return pkg, src.version


def pyhello_package(version: str, depends: list[str]) -> Package:
    code = (
        f'__version__ = "{version}"\n\n'
        "def main() -> None:\n"
        "    import sys\n"
        f'    print("pyhello {version} from", sys.prefix)\n'
    )
    meta = f"Metadata-Version: 2.1\nName: pyhello\nVersion: {version}\nSummary: test\n"
    dist = f"site-packages/pyhello-{version}.dist-info"
    files = [
        PkgFile("site-packages/pyhello/__init__.py", code.encode()),
        PkgFile(f"{dist}/METADATA", meta.encode()),
        PkgFile(f"{dist}/INSTALLER", b"conda\n"),
        PkgFile(f"{dist}/RECORD", b""),
        PkgFile(f"{dist}/entry_points.txt", b"[console_scripts]\npyhello = pyhello:main\n"),
    ]
    link = {"noarch": {"type": "python", "entry_points": ["pyhello = pyhello:main"]},
            "package_metadata_version": 1}
    return Package("pyhello", version, "noarch", files, depends=["python >=3.8", *depends],
                   build="pyh_0", noarch="python", link_json=link)


def textpfx_package() -> Package:
    conf = f"prefix = {PLACEHOLDER}\nlibdir = {PLACEHOLDER}/lib\n".encode()
    script = f"#!/bin/sh\necho {PLACEHOLDER}\n".encode()
    return Package("textpfx", "1.0", "noarch", [
        PkgFile("etc/textpfx.conf", conf, placeholder=True),
        PkgFile("bin/textpfx", script, 0o755, placeholder=True),
        PkgFile("share/textpfx/README", b"no prefix here\n"),
    ], build="0", noarch="generic")


BINPFX_C = r"""
#include <stdio.h>
static const char prefix[] = "@PLACEHOLDER@";
static const char datadir[] = "@PLACEHOLDER@/share/binpfx";
int main(int argc, char **argv) {
    const char *volatile p = prefix;
    const char *volatile d = datadir;
    if (argc > 1) puts(d); else puts(p);
    return 0;
}
"""


def binpfx_package(subdir: str, workdir: Path) -> Package:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("gcc is needed to build the binpfx test package")
    src = workdir / "binpfx.c"
    src.write_text(BINPFX_C.replace("@PLACEHOLDER@", PLACEHOLDER))
    exe = workdir / "binpfx"
    subprocess.run([cc, "-O0", "-o", str(exe), str(src)], check=True, capture_output=True)
    return Package("binpfx", "1.0", subdir, [
        PkgFile("bin/binpfx", exe.read_bytes(), 0o755, placeholder=True, binary=True),
    ])


# conda's own etc/profile.d/conda.sh (conda 24.x, BSD-3-Clause), its prefix as conda-build
# leaves it: what the build translates into modulefile commands (conda/shellhook.py).
CONDA_SH = r"""export CONDA_EXE='@P@/bin/conda'
export _CE_M=''
export _CE_CONDA=''
export CONDA_PYTHON_EXE='@P@/bin/python'

# Copyright (C) 2012 Anaconda, Inc
# SPDX-License-Identifier: BSD-3-Clause

__conda_exe() (
    "$CONDA_EXE" $_CE_M $_CE_CONDA "$@"
)

__conda_hashr() {
    if [ -n "${ZSH_VERSION:+x}" ]; then
        \rehash
    elif [ -n "${POSH_VERSION:+x}" ]; then
        :  # pass
    else
        \hash -r
    fi
}

__conda_activate() {
    if [ -n "${CONDA_PS1_BACKUP:+x}" ]; then
        PS1="$CONDA_PS1_BACKUP"
        \unset CONDA_PS1_BACKUP
    fi
    \local ask_conda
    ask_conda="$(PS1="${PS1:-}" __conda_exe shell.posix "$@")" || \return
    \eval "$ask_conda"
    __conda_hashr
}

__conda_reactivate() {
    \local ask_conda
    ask_conda="$(PS1="${PS1:-}" __conda_exe shell.posix reactivate)" || \return
    \eval "$ask_conda"
    __conda_hashr
}

conda() {
    \local cmd="${1-__missing__}"
    case "$cmd" in
        activate|deactivate)
            __conda_activate "$@"
            ;;
        install|update|upgrade|remove|uninstall)
            __conda_exe "$@" || \return
            __conda_reactivate
            ;;
        *)
            __conda_exe "$@"
            ;;
    esac
}

if [ -z "${CONDA_SHLVL+x}" ]; then
    \export CONDA_SHLVL=0
    if [ -n "${_CE_CONDA:+x}" ] && [ -n "${WINDIR+x}" ]; then
        PATH="$(\dirname "$CONDA_EXE")/condabin${PATH:+":${PATH}"}"
    else
        PATH="$(\dirname "$(\dirname "$CONDA_EXE")")/condabin${PATH:+":${PATH}"}"
    fi
    \export PATH
    if [ -z "${PS1+x}" ]; then
        PS1=
    fi
fi
"""

# A stand-in for conda's executable: enough of `shell.posix activate/deactivate` and
# `--version` to show that the modulefile's functions call it. It is not conda.
CONDA_EXE = """#!/bin/sh
prefix='@P@'
case "$1" in
    --version) echo "conda 24.1.2 (sitestack test package, not conda)" ;;
    shell.posix)
        case "$2" in
            activate) printf "export CONDA_PREFIX='%s'\\nexport CONDA_SHLVL=1\\nexport CONDA_DEFAULT_ENV=base\\nexport CONDA_PROMPT_MODIFIER='(base) '\\n" "$prefix" ;;
            deactivate) printf 'export CONDA_SHLVL=0\\nunset CONDA_PREFIX CONDA_DEFAULT_ENV CONDA_PROMPT_MODIFIER\\n' ;;
        esac ;;
    *) echo "test conda: $*" ;;
esac
"""


def conda_package() -> Package:
    """A hand-made `conda`: etc/profile.d/conda.sh, bin/conda and condabin/conda (text
    placeholders, as conda-build leaves them). It tests the wiring only: real conda cannot be
    fetched from the registries this project reaches."""
    sh = CONDA_SH.replace("@P@", PLACEHOLDER).encode()
    exe = CONDA_EXE.replace("@P@", PLACEHOLDER).encode()
    return Package("conda", "24.1.2", "noarch", [
        PkgFile("etc/profile.d/conda.sh", sh, placeholder=True),
        PkgFile("bin/conda", exe, 0o755, placeholder=True),
        PkgFile("condabin/conda", exe, 0o755, placeholder=True),
    ], depends=["python >=3.8"], build="0", noarch="generic")


def _index(channel: Path) -> None:
    from rattler.index import index_fs

    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))


def make_channel(
    dest: Path,
    python_prefix_source: str | os.PathLike[str] = sys.executable,
    *,
    python_cache: Path | None = None,
    extra: Iterable[Package] = (),
) -> Path:
    """Build the test channel in `dest` (created) and return it.

    `python_cache` is a folder where the big python package is kept and reused (one per
    session is plenty: building it takes a few seconds).
    """
    dest = Path(dest)
    subdir = host_subdir()
    (dest / "noarch").mkdir(parents=True, exist_ok=True)
    (dest / subdir).mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{python_prefix_source}|{sys.version}".encode()).hexdigest()[:12]
    cached = sorted(python_cache.glob(f"{key}/python-*.conda")) if python_cache else []
    if cached:
        target = dest / subdir / cached[0].name
        try:
            os.link(cached[0], target)
        except OSError:
            shutil.copy2(cached[0], target)
    else:
        pkg, _version = python_package(python_prefix_source, subdir)
        built = write_package(pkg, dest)
        if python_cache:
            (python_cache / key).mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, python_cache / key / built.name)
    write_package(pyhello_package("1.0", []), dest)
    write_package(pyhello_package("2.0", ["textpfx >=1.0"]), dest)
    write_package(textpfx_package(), dest, ".tar.bz2")
    with tempfile.TemporaryDirectory(prefix="ss-binpfx-") as tmp:
        write_package(binpfx_package(subdir, Path(tmp)), dest)
    write_package(Package("toonew", "1.0", "noarch", [PkgFile("share/toonew.txt", b"x\n")],
                          depends=["python >=3.99"], noarch="generic"), dest)
    for p in extra:
        write_package(p, dest)
    _index(dest)
    return dest


def reindex(channel: Path) -> None:
    _index(channel)


if __name__ == "__main__":  # python tests/helpers/condachannel.py DEST
    t = time.monotonic()
    print(make_channel(Path(sys.argv[1])), f"{time.monotonic() - t:.1f}s")
