"""[packages.build.NAME]: a package built from its sdist with its own env, cached by its options.

The sdists here are real: a C extension and a PEP 517 backend with no dependencies (so the
build works offline) that compiles it with `cc`, passing `-DCEXT_VALUE="$CEXT_VALUE"` and
`$CEXT_CFLAGS`. The value compiled in is read back at import, so the test sees what reached
the compiler, not what a log says.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sitestack.build.stack import BuildLog, build
from sitestack.core.layout import SiteRoot
from sitestack.core.records import StackRecord
from sitestack.site.registry import Site
from sitestack.site.spec import parse_spec
from tests.conftest import run_cli, spec_text
from tests.helpers.wheels import make_sdist

C_SOURCE = r"""
#include <Python.h>
#ifdef CEXT_BREAK
#error NAME build broken on purpose by CEXT_CFLAGS
#endif
#ifndef CEXT_VALUE
#define CEXT_VALUE "unset"
#endif
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "NAME", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_NAME(void) {
    PyObject *m = PyModule_Create(&mod);
    if (m) PyModule_AddStringConstant(m, "VALUE", CEXT_VALUE);
    return m;
}
"""

BACKEND = r'''
"""A PEP 517 backend with no dependencies: compiles NAME.c with $CC, flags from the env."""
import base64, hashlib, os, shlex, subprocess, sysconfig, tempfile, zipfile

NAME, VERSION = "@NAME@", "@VERSION@"
META = f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"


def _tag():
    impl = "cp" + sysconfig.get_config_var("py_version_nodot")
    return f"{impl}-{impl}-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")


def _hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, f"{NAME}-{VERSION}.dist-info")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write(META)
    return os.path.basename(d)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    so = NAME + sysconfig.get_config_var("EXT_SUFFIX")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, so)
        flags = shlex.split(os.environ.get("CEXT_CFLAGS", ""))
        if "CEXT_VALUE" in os.environ:
            flags.append('-DCEXT_VALUE="%s"' % os.environ["CEXT_VALUE"])
        cc = shlex.split(os.environ.get("CC", "cc"))
        # -g, as setuptools compiles: the debug info names the include folder, which is
        # under the build's temp prefix (the cache must link such a binary, not rewrite it).
        subprocess.run([*cc, "-g", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], *flags,
                        f"{NAME}.c", "-o", out], check=True)
        with open(out, "rb") as f:
            data = f.read()
    di = f"{NAME}-{VERSION}.dist-info"
    wheel = f"Wheel-Version: 1.0\nGenerator: test-backend\nRoot-Is-Purelib: false\nTag: {_tag()}\n"
    files = {so: data, f"{di}/METADATA": META.encode(), f"{di}/WHEEL": wheel.encode()}
    name = f"{NAME}-{VERSION}-{_tag()}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        record = []
        for path, content in files.items():
            z.writestr(path, content)
            record.append(f"{path},{_hash(content)},{len(content)}")
        record.append(f"{di}/RECORD,,")
        z.writestr(f"{di}/RECORD", "\n".join(record) + "\n")
    return name
'''


def make_c_sdist(dest: Path, name: str, version: str = "1.0") -> Path:
    """NAME-VERSION.tar.gz: a C extension module NAME whose VALUE is set at compile time."""
    files = {
        "pyproject.toml": (
            '[build-system]\nrequires = []\nbuild-backend = "test_backend"\nbackend-path = ["."]\n\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
        ),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}.c": C_SOURCE.replace("NAME", name),
        "test_backend.py": BACKEND.replace("@NAME@", name).replace("@VERSION@", version),
    }
    return make_sdist(dest, name, version, files)


@pytest.fixture(scope="module")
def sdists(workdir: Path) -> Path:
    d = workdir / "sdists"
    d.mkdir()
    make_c_sdist(d, "cext")
    make_c_sdist(d, "cextother")  # no build options: must not see cext's env
    return d


@pytest.fixture(scope="module")
def opts_root(workdir: Path) -> SiteRoot:
    root = SiteRoot(workdir / "site-buildopts")
    root.path.mkdir()
    return root


def _spec(name: str, wheelhouse: Path, sdists: Path, env: dict[str, str], reqs: list[str] | None = None) -> str:
    env_toml = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    text = spec_text(name, reqs or ["cext", "cextother", "tinyapp"], wheelhouse, imports=["cext", "cextother"],
                     extra=f"\n[packages.build.cext]\nno-binary = true\nenv = {{ {env_toml} }}\n")
    return text.replace(f'find-links = ["{wheelhouse}"]', f'find-links = ["{wheelhouse}", "{sdists}"]')


def _value(rec: StackRecord, module: str) -> str:
    r = subprocess.run([str(rec.python_exe), "-c", f"import {module}; print({module}.VALUE)"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _so(rec: StackRecord, module: str) -> Path:
    return next(rec.site_packages.glob(f"{module}.cpython-*.so"))


def _build(root: SiteRoot, text: str, version: str) -> StackRecord:
    build(parse_spec(text), root, version=version, log=BuildLog(echo=False))
    return Site(root).get(f"{text.split(chr(34))[1]}/{version}")


@pytest.fixture(scope="module")
def first(opts_root: SiteRoot, wheelhouse: Path, sdists: Path) -> StackRecord:
    return _build(opts_root, _spec("cx", wheelhouse, sdists, {"CEXT_VALUE": "from-the-spec"}), "1")


def test_env_reaches_the_compiler_of_that_package_only(first: StackRecord) -> None:
    assert _value(first, "cext") == "from-the-spec"
    # cextother was built from its sdist too (there is no wheel), but without cext's env.
    assert _value(first, "cextother") == "unset"
    # A real C extension, built from source, not a wheel off an index.
    wheel = next(first.site_packages.glob("cext-1.0.dist-info")) / "WHEEL"
    assert "Generator: test-backend" in wheel.read_text()
    log = (first.records / "build.log").read_text()
    assert "--no-binary cext" in log and "--no-binary-package" not in log
    assert first.packages["cext"] == "1.0" and first.packages["tinyapp"] == "1.0"


def test_next_version_links_the_source_build(first: StackRecord, opts_root: SiteRoot, wheelhouse: Path,
                                            sdists: Path) -> None:
    second = _build(opts_root, _spec("cx", wheelhouse, sdists, {"CEXT_VALUE": "from-the-spec"}), "2")
    assert os.stat(_so(first, "cext")).st_ino == os.stat(_so(second, "cext")).st_ino, "compiled again"
    log = (second.records / "build.log").read_text()
    hits = [ln for ln in log.splitlines() if ln.startswith("site cache:")]
    assert hits and " 0 new" in hits[0], hits
    assert "building cext from source" not in log
    entries = [p for p in (opts_root.meta / "pypi").iterdir() if p.name.startswith("cext-1.0-src-")]
    assert len(entries) == 1
    entry = json.loads((entries[0] / "entry.json").read_text())
    assert entry["env"] == {"CEXT_VALUE": "from-the-spec"} and entry["options"]
    so = str(_so(first, "cext").relative_to(first.prefix))
    assert so in entry["binary"] and so not in entry["rewrite"]  # names the temp prefix: linked as is
    # Other options are another build: a new entry, and the new value compiled in.
    third = _build(opts_root, _spec("cx", wheelhouse, sdists, {"CEXT_VALUE": "changed"}), "3")
    assert _value(third, "cext") == "changed" and _value(second, "cext") == "from-the-spec"
    assert os.stat(_so(first, "cext")).st_ino != os.stat(_so(third, "cext")).st_ino
    assert os.stat(_so(first, "cextother")).st_ino == os.stat(_so(third, "cextother")).st_ino


def test_a_failed_source_build_names_the_package_and_leaves_nothing(
        opts_root: SiteRoot, wheelhouse: Path, sdists: Path, workdir: Path, first: StackRecord) -> None:
    spec = workdir / "broken-cext.toml"
    spec.write_text(_spec("cxbroken", wheelhouse, sdists, {"CEXT_CFLAGS": "-DCEXT_BREAK"}))
    before = sorted(os.listdir(opts_root.meta / "pypi"))
    r = run_cli("build", str(spec), "--root", str(opts_root.path), "--version", "1")
    assert r.returncode == 3, r.stderr
    assert "sitestack: error: building cext from source failed" in r.stderr
    assert "#error cext build broken on purpose by CEXT_CFLAGS" in r.stderr  # the compiler's own line
    assert "Traceback" not in r.stderr.split("failed:")[0]
    assert not (opts_root.stacks / "cxbroken").exists()
    assert sorted(os.listdir(opts_root.meta / "pypi")) == before, "no half entry, no temp folder"
    assert not [d for d in os.listdir(opts_root.tmp) if d.startswith("cxbroken-")]


def test_build_options_without_no_binary_still_apply_env(opts_root: SiteRoot, wheelhouse: Path,
                                                          sdists: Path) -> None:
    text = _spec("cxenv", wheelhouse, sdists, {"CEXT_VALUE": "env-only"}).replace("no-binary = true\n", "")
    rec = _build(opts_root, text, "1")
    # cext has only an sdist, so uv builds it anyway, with the env of its own table.
    assert _value(rec, "cext") == "env-only"


MPI_TEST = (
    "from mpi4py import MPI; import mpi4py; c = MPI.COMM_WORLD; "
    "s = c.allreduce(c.Get_rank() + 1); "
    "print(c.Get_rank(), c.Get_size(), s, MPI.Get_library_version().split(',')[0])"
)


@pytest.mark.network
@pytest.mark.mpi
def test_mpi4py_from_source_against_debian_open_mpi(workdir: Path) -> None:
    mpicc, mpiexec = shutil.which("mpicc"), shutil.which("mpiexec")
    if not (mpicc and mpiexec):
        pytest.skip("Open MPI (mpicc, mpiexec) is not installed")
    root = SiteRoot(workdir / "site-mpi4py")
    root.path.mkdir()
    text = (f'[stack]\nname = "mpi"\npython = "{sys.executable}"\n\n'
            '[packages]\nrequirements = ["mpi4py"]\n\n'
            '[packages.build.mpi4py]\nno-binary = true\nenv = { MPICC = "mpicc" }\n\n'
            '[tests]\nimports = ["mpi4py.MPI"]\n')
    rec = _build(root, text, "1")
    assert "Generator: setuptools" in next(rec.site_packages.glob("mpi4py-*.dist-info/WHEEL")).read_text()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    r = subprocess.run([mpiexec, "-n", "2", "--oversubscribe", str(rec.python_exe), "-c", MPI_TEST],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = sorted(r.stdout.split("\n")[:2])
    assert [ln.split()[:3] for ln in lines] == [["0", "2", "3"], ["1", "2", "3"]], r.stdout
    assert all("Open MPI" in ln for ln in lines), r.stdout
    # Compiled by mpicc against Debian's Open MPI: the extension links the system libmpi.
    so = next(rec.site_packages.glob("mpi4py/MPI.cpython-*.so"))
    ldd = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
    assert "libmpi.so" in ldd and "libopen-rte.so" in ldd and "not found" not in ldd, ldd  # Open MPI's own
    entry = next((root.meta / "pypi").glob("mpi4py-*-src-*/entry.json"))
    assert json.loads(entry.read_text())["env"] == {"MPICC": "mpicc"}
    # The next dated version links the build instead of compiling mpi4py again.
    again = _build(root, text, "2")
    assert os.stat(so).st_ino == os.stat(again.site_packages / so.relative_to(rec.site_packages)).st_ino


@pytest.mark.parametrize("system", ["lmod", "tcl"])
def test_module_help_and_whatis_name_what_the_site_asked_for(system: str, opts_root: SiteRoot,
                                                             wheelhouse: Path) -> None:
    from tests.helpers import modules

    if not modules.available(system):
        pytest.skip(f"{system} is not installed")
    name = "asked"
    if not (opts_root.stacks / name / "1").exists():
        # Asked for tinyapp and needsnew; shadowme and pip come with them. By name, needsnew,
        # pip and shadowme would come first.
        build(parse_spec(spec_text(name, ["tinyapp", "needsnew"], wheelhouse)), opts_root, version="1",
              log=BuildLog(echo=False))
    rec = Site(opts_root).get(f"{name}/1")
    assert rec.requested == ("tinyapp", "needsnew")
    mp = opts_root.lmod_dir if system == "lmod" else opts_root.tcl_dir
    r = modules.run_module_script(system, f'module use "{mp}"\nmodule help {name}/1 2>&1\nmodule whatis {name}/1 2>&1\n')
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout + r.stderr
    assert "Main packages: tinyapp 1.0, needsnew 1.0 and 2 more" in text, text
    assert "Packages: tinyapp 1.0, needsnew 1.0 and 2 more" in text.replace("Main packages", ""), text


def test_progress_off_a_terminal_is_one_plain_line_per_step() -> None:
    from sitestack.core.log import BuildLog as Log
    from sitestack.core.progress import Progress

    out = io.StringIO()
    log = Log(echo=True)
    with Progress(log, "hashed", unit="bytes", stream=out) as bar:
        for _ in range(3):
            bar.advance(1536)
    with Progress(log, "installed into the site cache", 4, noun="distributions", stream=out) as bar:
        bar.advance(4)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0].startswith("--> hashed: 4.5 KiB in 3 files, ") and lines[0].endswith("s")
    assert lines[1].startswith("--> installed into the site cache: 4 of 4 distributions, ")
    assert lines[0][4:] in log.lines  # the same line goes into the build log


def test_build_shows_progress_lines_in_a_log(opts_root: SiteRoot, wheelhouse: Path, sdists: Path,
                                             workdir: Path) -> None:
    spec = workdir / "progress.toml"
    spec.write_text(_spec("cxprogress", wheelhouse, sdists, {"CEXT_VALUE": "p"}, reqs=["cext", "cextother", "needsnew"]))
    r = run_cli("build", str(spec), "--root", str(opts_root.path), "--version", "1")
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert "\x1b[" not in err and "\r" not in err  # stderr is a pipe: no bars
    import re

    # cext with these options is new to this site's cache at least.
    counts = re.findall(r"^--> installed into the site cache: (\d+) of (\d+) distributions, ", err, re.M)
    assert len(counts) == 1 and counts[0][0] == counts[0][1] and int(counts[0][0]) >= 1, err
    assert [ln for ln in err.splitlines() if ln.startswith("--> hashed: ") and " files, " in ln]
    log = (opts_root.prefix("cxprogress", "1") / ".sitestack" / "build.log").read_text()
    assert "file(s) linked from the site cache were not read again" in log
