"""The test harness itself is real: wheels install, module systems load/unload, users switch."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import modules, users
from tests.helpers.env import offline_env
from tests.helpers.wheels import make_wheel, make_wheelhouse

# Real venvs, pip and uv installs, module systems: seconds each, so not in the fast tier.
pytestmark = pytest.mark.slow


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    assert r.returncode == 0, f"{argv} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


# --------------------------------------------------------------------------------- wheels


def test_wheel_layout(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path, "Tiny.Thing", "1.2", requires=["dep>=1"],
                     console_scripts={"tiny": "tiny_thing:main"})
    assert whl.name == "tiny_thing-1.2-py3-none-any.whl"
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        meta = zf.read("tiny_thing-1.2.dist-info/METADATA").decode()
        record = zf.read("tiny_thing-1.2.dist-info/RECORD").decode()
    assert "tiny_thing/__init__.py" in names
    for f in ("METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt"):
        assert f"tiny_thing-1.2.dist-info/{f}" in names
    assert "Metadata-Version: 2.1\nName: Tiny.Thing\nVersion: 1.2\n" in meta
    assert "Requires-Dist: dep>=1" in meta
    assert "tiny_thing-1.2.dist-info/RECORD,,\n" in record
    assert len(record.splitlines()) == len(names)


def test_wheels_install_offline_with_pip_and_run_console_script(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    make_wheelhouse(wh, [
        {"name": "hello-app", "version": "1.0", "requires": ["hello-lib>=2"],
         "console_scripts": {"hello-app": "hello_app:main"}},
        "hello-lib==1.0",
        ("hello-lib", "2.0"),
    ])
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    _run([py, "-m", "pip", "install", "--no-index", "--find-links", str(wh), "hello-app"],
         env=offline_env())
    out = _run([str(venv / "bin" / "hello-app")]).stdout
    assert out == "hello-app 1.0\n"
    out = _run([py, "-c", "import hello_lib; print(hello_lib.__version__)"]).stdout
    assert out == "2.0\n"  # Requires-Dist was honoured
    _run([py, "-m", "pip", "check"], env=offline_env())


def test_wheels_install_offline_with_uv(tmp_path: Path) -> None:
    uv_mod = pytest.importorskip("uv")
    uv = uv_mod.find_uv_bin()
    wh = tmp_path / "wh"
    make_wheel(wh, "uvpkg", "3.1", modules={"uvpkg": "X = 1\n", "uvpkg.cli": "def main():\n    print('cli')\n"},
               console_scripts={"uvpkg-cli": "uvpkg.cli:main"})
    venv = tmp_path / "venv"
    env = offline_env(UV_CACHE_DIR=str(tmp_path / "uvcache"))
    _run([uv, "venv", "--no-config", "--python", sys.executable, str(venv)], env=env)
    _run([uv, "pip", "install", "--no-config", "--python", str(venv / "bin" / "python"),
          "--no-index", "--find-links", str(wh), "uvpkg"], env=env)
    assert _run([str(venv / "bin" / "uvpkg-cli")]).stdout == "cli\n"
    r = _run([str(venv / "bin" / "python"), "-c",
              "import importlib.metadata as m, uvpkg; print(m.version('uvpkg'), uvpkg.X)"])
    assert r.stdout == "3.1 1\n"


# --------------------------------------------------------------------------- module systems

LUA_MODULE = """\
setenv("SSTEST_VAR", "hello")
prepend_path("PATH", "{bindir}")
"""
TCL_MODULE = """\
#%Module1.0
setenv SSTEST_VAR hello
prepend-path PATH {bindir}
"""


def _write_modulepath(base: Path, system: str) -> Path:
    mp = base / f"mp-{system}"
    (mp / "sstool").mkdir(parents=True)
    bindir = base / "sstool-bin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / "sstool-hello"
    tool.write_text("#!/bin/sh\necho sstool says hi\n")
    tool.chmod(0o755)
    if system == "lmod":
        (mp / "sstool" / "1.0.lua").write_text(LUA_MODULE.format(bindir=bindir))
    else:
        (mp / "sstool" / "1.0").write_text(TCL_MODULE.format(bindir=bindir))
    return mp


@pytest.mark.parametrize("system", modules.MODULE_SYSTEMS)
def test_module_load_unload_restores_environment(system: str, tmp_path: Path) -> None:
    modules.require(system)
    mp = _write_modulepath(tmp_path, system)
    snap = modules.env_snapshot_script()
    script = f"""
{snap}
module use {mp}
module avail 2>&1 | grep -q sstool
{snap}
module load sstool
sstool-hello
{snap}
module unload sstool
{snap}
"""
    r = modules.run_module_script(system, script)
    assert r.returncode == 0, r.stderr
    assert "sstool says hi\n" in r.stdout
    start, used, loaded, unloaded = modules.parse_snapshots(r.stdout)

    # The clean environment really is clean: nothing from pytest's process leaked in.
    assert start["PATH"] == modules.BASE_PATH
    assert "PYTEST_CURRENT_TEST" not in start and "LMOD_DUPLICATE_PATHS" not in start
    assert used["MODULEPATH"] == str(mp)

    assert loaded["PATH"] == f"{tmp_path / 'sstool-bin'}:{modules.BASE_PATH}"
    assert loaded["SSTEST_VAR"] == "hello"
    changed = modules.env_diff(modules.strip_module_internals(used),
                               modules.strip_module_internals(loaded))
    assert set(changed) == {"PATH", "SSTEST_VAR"}

    # Unload restores every variable exactly, bar the module system's own bookkeeping.
    assert unloaded["PATH"] == used["PATH"] == modules.BASE_PATH
    assert modules.strip_module_internals(unloaded) == modules.strip_module_internals(used)
    assert modules.strip_module_internals(unloaded, modulepath=False) == \
        modules.strip_module_internals(used, modulepath=False)
    assert modules.strip_module_internals(unloaded) == modules.strip_module_internals(start)


@pytest.mark.parametrize("system", modules.MODULE_SYSTEMS)
def test_module_script_errexit(system: str) -> None:
    modules.require(system)
    r = modules.run_module_script(system, "false\necho not reached\n")
    assert r.returncode != 0 and "not reached" not in r.stdout
    r = modules.run_module_script(system, "false\necho reached\n", errexit=False)
    assert r.returncode == 0 and r.stdout == "reached\n"


def test_parse_snapshots_ignores_other_output() -> None:
    out = "noise\n\0@@SITESTACK-ENV-BEGIN@@\0A=1\0B=x\ny=z\0@@SITESTACK-ENV-END@@\0more\n"
    assert modules.parse_snapshots(out) == [{"A": "1", "B": "x\ny=z"}]


def test_strip_module_internals() -> None:
    env = {"PATH": "/p", "LOADEDMODULES": "a", "_LMFILES_": "f", "_ModuleTable001_": "x",
           "_ModuleTable_Sz_": "1", "__LMOD_REF_COUNT_PATH": "/p:1", "__MODULES_LMALTNAME": "a",
           "__MODULES_SHARE_PATH": "/p:2", "MODULEPATH": "/m", "LMOD_FAMILY_PYTHON": "conda",
           "MODULES_CMD": "/x/modulecmd.tcl"}
    assert modules.strip_module_internals(env) == {
        "PATH": "/p", "LMOD_FAMILY_PYTHON": "conda", "MODULES_CMD": "/x/modulecmd.tcl"}
    assert "MODULEPATH" in modules.strip_module_internals(env, modulepath=False)


# ----------------------------------------------------------------------------------- users


def test_unprivileged_user_runs_debian_python_not_root_pyenv() -> None:
    user = users.ensure_user()
    assert user.uid != 0 and user.home.is_dir()
    py = users.debian_python()
    r = users.run_as(user, [py, "-c", "import os, sys; print(os.getuid(), sys.executable)"],
                     check=True)
    assert r.stdout == f"{user.uid} {py}\n"
    assert users.run_as(user, ["id", "-un"], check=True).stdout.strip() == user.name
    if sys.executable.startswith("/root/"):
        r = users.run_as(user, [sys.executable, "-c", "pass"])
        assert r.returncode != 0  # /root is 700: the pyenv python is out of reach


@pytest.mark.parametrize("system", modules.MODULE_SYSTEMS)
def test_module_script_as_unprivileged_user(system: str, tmp_path: Path) -> None:
    modules.require(system)
    user = users.ensure_user()
    mp = _write_modulepath(tmp_path, system)
    users.share_with_users(tmp_path)
    r = modules.run_module_script(
        system, f"module use {mp}\nmodule load sstool\nsstool-hello\nid -u\necho \"$HOME\"\n",
        user=user.name)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"sstool says hi\n{user.uid}\n{user.home}\n"
