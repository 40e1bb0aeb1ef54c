"""Building and publishing a stack: self-contained, compiled, recorded, atomic, read-only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sitestack.build.interpreter import copy_interpreter, find_python, patchelf_bin
from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import Manifest, verify
from sitestack.core.records import StackRecord
from sitestack.site.registry import Site
from tests.conftest import run_cli, spec_text
from tests.helpers import users
from tests.helpers.env import clean_env
from tests.helpers.stacks import PY_XY, stale_bytecode


def test_layout_and_records(stack: StackRecord) -> None:
    p = stack.prefix
    assert (p / "bin" / f"python{PY_XY}").is_file() and os.readlink(p / "bin" / "python3") == f"python{PY_XY}"
    rpath = subprocess.run([patchelf_bin(), "--print-rpath", str(p / "bin" / f"python{PY_XY}")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert rpath == "$ORIGIN/../lib"
    assert (p / "lib" / f"libpython{PY_XY}.so.1.0").is_file()
    stdlib = p / "lib" / f"python{PY_XY}"
    assert not (stdlib / "test").exists(), "the stdlib test suite is not copied"
    assert (stdlib / "os.py").is_file() and (p / "include" / f"python{PY_XY}" / "Python.h").is_file()
    assert list(stdlib.glob(f"config-{PY_XY}*/Makefile")), "sysconfig config data is kept for C builds"
    sp = stack.site_packages
    assert {d.name.split("-")[0] for d in sp.glob("*.dist-info")} >= {"pip", "shadowme", "tinyapp", "basepkg", "onlyold"}
    rec = p / ".sitestack"
    for name in ("stack.json", "spec.toml", "lock.txt", "manifest.json", "prefix-files.json", "build.log", "tests.json"):
        assert (rec / name).is_file(), name
    lock = dict(line.split("==") for line in (rec / "lock.txt").read_text().split())
    assert lock == stack.packages and lock["shadowme"] == "1.0" and "pip" in lock
    tests = json.loads((rec / "tests.json").read_text())
    assert {"import shadowme", "import tinyapp"} <= {t["test"] for t in tests} and all(t["ok"] for t in tests)
    assert verify(p, Manifest.load(rec / "manifest.json"), check_mode=True) == []


def test_sysconfig_names_the_stack(stack: StackRecord) -> None:
    out = subprocess.run(
        [str(stack.python_exe), "-c",
         "import sys, sysconfig; print(sys.prefix); print(sysconfig.get_config_var('LIBDIR')); "
         "print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, env=clean_env()).stdout.split()
    assert out == [str(stack.prefix), str(stack.prefix / "lib"), str(stack.site_packages)]


def test_every_py_has_bytecode(stack: StackRecord) -> None:
    import importlib.util

    missing = []
    for base in (stack.prefix / "lib" / f"python{PY_XY}", stack.prefix / "lib" / "sitestack-pip"):
        for py in base.rglob("*.py"):
            pyc = Path(importlib.util.cache_from_source(str(py)))
            if not pyc.exists():
                missing.append(str(py.relative_to(stack.prefix)))
    # A few stdlib files are deliberately invalid Python (lib2to3 grammar fixtures).
    assert len(missing) <= 5, missing[:20]


def test_site_packages_bytecode_is_current(stack: StackRecord) -> None:
    """Every .pyc in site-packages is one CPython takes for the source as linked; pip's may
    be the source interpreter's own (build/reusepyc.py)."""
    n, stale = stale_bytecode(stack.site_packages)
    assert n > 400 and stale == []  # pip alone has 491 modules


def test_no_write_bits_anywhere(stack: StackRecord) -> None:
    writable = []
    for dirpath, dirnames, filenames in os.walk(stack.prefix):
        for n in dirnames + filenames + ["."]:
            path = os.path.join(dirpath, n)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o222:
                writable.append(path)
            if not stat.S_ISLNK(st.st_mode) and not st.st_mode & 0o004:
                writable.append("unreadable: " + path)
    assert writable == []


def test_what_a_smoke_test_writes_into_the_prefix_is_relocated_recorded_and_locked(
        site_root: SiteRoot, build_stack, tmp_path_factory: pytest.TempPathFactory) -> None:  # type: ignore[no-untyped-def]
    """A test command may write into the prefix: a module naming the temp prefix and a link
    into it are relocated to the final path (and the module compiled for it), recorded in the
    manifest and the prefix list, and locked down like every other file."""
    script = tmp_path_factory.mktemp("writer") / "w.py"
    script.write_text(
        "import os, sys, sysconfig\n"
        "sp = sysconfig.get_paths()['purelib']\n"
        "open(os.path.join(sp, 'written.py'), 'w').write(f'WHERE = {sys.prefix!r}\\n')\n"
        "os.symlink(os.path.join(sys.prefix, 'bin', 'python3'), os.path.join(sp, 'written-python'))\n")
    os.chmod(script.parent, 0o755)
    rec = build_stack("writes", "1", ["tinyapp"], commands=[f"python {script}"])
    sp = rec.site_packages
    assert (sp / "written.py").read_text() == f"WHERE = {str(rec.prefix)!r}\n"
    assert os.readlink(sp / "written-python") == str(rec.prefix / "bin" / "python3")
    r = subprocess.run([str(rec.python_exe), "-c", "import written; print(written.WHERE)"],
                       capture_output=True, text=True, env=clean_env())
    assert r.stdout.strip() == str(rec.prefix), r.stderr
    import importlib.util

    assert Path(importlib.util.cache_from_source(str(sp / "written.py"))).is_file()
    assert "written.py" not in stale_bytecode(sp)[1] and not (sp / "written.py").stat().st_mode & 0o222
    manifest = Manifest.load(rec.records / "manifest.json")
    assert verify(rec.prefix, manifest, check_mode=True) == []
    rel = f"lib/python{PY_XY}/site-packages/written.py"
    assert rel in manifest.files and manifest.symlinks[f"lib/python{PY_XY}/site-packages/written-python"] == \
        str(rec.prefix / "bin" / "python3")
    hits = json.loads((rec.records / "prefix-files.json").read_text())["files"]
    assert {"path": rel, "kind": "text"} in hits
    assert "written by the smoke tests, naming the build folder (relocated)" in (rec.records / "build.log").read_text()


def test_stack_inherits_into_plain_venv(stack: StackRecord, tmp_path: Path) -> None:
    env = clean_env()
    subprocess.run([str(stack.python_exe), "-m", "venv", "--without-pip", "--system-site-packages",
                    str(tmp_path / "v")], check=True, env=env)
    out = subprocess.run([str(tmp_path / "v" / "bin" / "python"), "-c",
                          "import shadowme, sys; print(shadowme.__file__); print(sys.prefix)"],
                         capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out[0].startswith(str(stack.site_packages)) and out[1] == str(tmp_path / "v")


def test_survives_removal_of_source_interpreter(workdir: Path, wheelhouse: Path) -> None:
    """Build from a throwaway CPython, delete it, and the stack still runs and installs."""
    from sitestack.build.stack import BuildLog, build
    from sitestack.core.fsutil import rmtree
    from sitestack.site.spec import parse_spec

    throwaway = workdir / "throwaway-python"
    copy_interpreter(find_python(sys.executable), throwaway, throwaway)
    root = SiteRoot(workdir / "site-throwaway")
    text = spec_text("solo", ["tinyapp"], wheelhouse).replace(sys.executable, str(throwaway / "bin" / f"python{PY_XY}"))
    build(parse_spec(text), root, version="1.0", log=BuildLog(echo=False))
    rmtree(throwaway)
    rec = Site(root).get("solo/1.0")
    # The copy has no site-packages: none of pip's bytecode could be reused, all compiled.
    pip_modules = len(list((rec.site_packages / "pip").rglob("*.py")))
    assert f"; {pip_modules} file(s) left to compile" in (rec.records / "build.log").read_text()
    assert stale_bytecode(rec.site_packages / "pip") == (pip_modules, [])
    env = clean_env()
    r = subprocess.run([str(rec.python_exe), "-c", "import ssl, sqlite3, ctypes, tinyapp, sys; print(sys.prefix)"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == str(rec.prefix), r.stderr
    r = subprocess.run([str(rec.prefix / "bin" / "tinyapp")], capture_output=True, text=True, env=env)
    assert r.stdout.strip() == "tinyapp 1.0"
    r = subprocess.run([str(rec.prefix / "bin" / "pip"), "--version"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and str(rec.prefix) in r.stdout


def _state(root: SiteRoot) -> str:
    return root.state_file.read_text() if root.state_file.exists() else ""


def test_failed_smoke_test_publishes_nothing(stack: StackRecord, site_root: SiteRoot, wheelhouse: Path, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text("conda", ["tinyapp"], wheelhouse,
                              commands=["echo the-output-of-the-test; exit 3"]))
    before = _state(site_root)
    mods_before = sorted(p.name for p in (site_root.lmod_dir / "conda").iterdir())
    r = run_cli("build", str(spec), "--root", str(site_root.path), "--version", "2099-01-01", "--default")
    assert r.returncode == 4, r.stderr
    assert "exit 3" in r.stderr and "the-output-of-the-test" in r.stderr
    assert not (site_root.stacks / "conda" / "2099-01-01").exists()
    assert _state(site_root) == before
    assert sorted(p.name for p in (site_root.lmod_dir / "conda").iterdir()) == mods_before
    assert not any(site_root.tmp.iterdir()), "temp build folders are removed"
    assert Site(site_root).default_version("conda") == stack.version


def test_failed_import_publishes_nothing(site_root: SiteRoot, wheelhouse: Path, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text("impfail", ["tinyapp"], wheelhouse, imports=["no_such_module_xyz"]))
    r = run_cli("build", str(spec), "--root", str(site_root.path), "--version", "1")
    assert r.returncode == 4 and "import no_such_module_xyz" in r.stderr and "ModuleNotFoundError" in r.stderr
    assert not (site_root.stacks / "impfail" / "1").exists()


def test_unresolvable_package_is_named(tmp_path: Path, wheelhouse: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text("x", ["no-such-package-abc"], wheelhouse))
    r = run_cli("build", str(spec), "--root", str(tmp_path / "root"), "--version", "1")
    assert r.returncode == 3 and "no-such-package-abc" in r.stderr, r.stderr
    assert not (tmp_path / "root" / "stacks" / "x" / "1").exists()


def test_existing_version_is_never_overwritten(stack: StackRecord, site_root: SiteRoot, wheelhouse: Path, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text("conda", ["tinyapp"], wheelhouse))
    manifest = (stack.records / "manifest.json").read_bytes()
    r = run_cli("build", str(spec), "--root", str(site_root.path), "--version", stack.version)
    assert r.returncode == 5 and "already published" in r.stderr
    assert (stack.records / "manifest.json").read_bytes() == manifest


def test_concurrent_build_refused_or_serialised(site_root: SiteRoot, wheelhouse: Path, tmp_path: Path) -> None:
    from sitestack.core.fsutil import file_lock

    spec = tmp_path / "s.toml"
    spec.write_text(spec_text("locked", ["tinyapp"], wheelhouse))
    args = ["build", str(spec), "--root", str(site_root.path)]
    with file_lock(site_root.lock_for("locked")):
        r = run_cli(*args, "--version", "1", "--no-wait")
        assert r.returncode == 5 and "locked" in r.stderr
        waiting = subprocess.Popen([sys.executable, "-m", "sitestack", *args, "--version", "2"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert waiting.poll() is None, "the second build waits for the lock"
        assert not (site_root.stacks / "locked" / "2").exists()
    _out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert (site_root.stacks / "locked" / "2" / ".sitestack" / "stack.json").is_file()


def test_kill_9_mid_build_leaves_no_version(site_root: SiteRoot, wheelhouse: Path, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text("killed", ["tinyapp"], wheelhouse, commands=["sleep 120"]))
    proc = subprocess.Popen([sys.executable, "-m", "sitestack", "build", str(spec), "--root",
                             str(site_root.path), "--version", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        tmps = [d for d in site_root.tmp.iterdir() if d.name.startswith("killed-")] if site_root.tmp.exists() else []
        # Any of them: the smoke tests' HOME (killed-smoke-*) appears beside the temp prefix
        # as soon as the packages are linked, and may be listed first.
        if any(list((d / "lib" / f"python{PY_XY}" / "site-packages").glob("tinyapp*")) for d in tmps):
            break
        time.sleep(0.2)
    else:
        pytest.fail("build never reached the smoke tests")
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (site_root.stacks / "killed" / "1").exists()
    assert not (site_root.lmod_dir / "killed").exists()
    assert "killed" not in Site(site_root).names()
    # The smoke tests' HOME sits beside the temp prefix (not in /tmp, where nothing would
    # ever clear it), so the next build of the name finds it as a killed build's temp.
    assert [d for d in site_root.tmp.iterdir() if d.name.startswith("killed-smoke-")]
    # The next build of the name clears the stale temp folders and succeeds.
    spec.write_text(spec_text("killed", ["tinyapp"], wheelhouse))
    run_cli("build", str(spec), "--root", str(site_root.path), "--version", "1", check=True)
    assert not [d for d in site_root.tmp.iterdir() if d.name.startswith("killed-")]


@pytest.fixture(scope="module")
def user() -> users.TestUser:
    return users.ensure_user()


def test_user_cannot_change_stack_and_pip_is_clear(stack: StackRecord, wheelhouse: Path, user: users.TestUser) -> None:
    manifest = Manifest.load(stack.records / "manifest.json")
    r = users.run_as(user, ["touch", str(stack.site_packages / "evil.py")])
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = users.run_as(user, ["rm", "-f", str(stack.site_packages / "shadowme" / "__init__.py")])
    assert r.returncode != 0
    pip = [str(stack.prefix / "bin" / "pip"), "install", "--no-index", "--find-links", str(wheelhouse)]
    # Forcing an install into the stack fails with pip's permission message.
    r = users.run_as(user, [*pip, "--no-user", "--ignore-installed", "userpkg"])
    assert r.returncode != 0
    assert "Permission denied" in r.stderr or "not writeable" in r.stderr, r.stderr
    # A bare `pip install` goes to the per-version user base, never into the stack.
    home = users.make_user_dir(user)
    try:
        ub = home / "ub"
        r = users.run_as(user, [*pip, "userpkg"], env={"PYTHONUSERBASE": str(ub)})
        assert r.returncode == 0, r.stderr
        assert list(ub.glob(f"lib/python{PY_XY}/site-packages/userpkg/__init__.py"))
        assert (ub / "bin" / "userpkg-hello").exists()
        assert not list(stack.site_packages.glob("userpkg*"))
        assert verify(stack.prefix, manifest, check_mode=True) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_root_bare_pip_install_goes_to_user_base(stack: StackRecord, wheelhouse: Path, tmp_path: Path) -> None:
    env = clean_env(PYTHONUSERBASE=str(tmp_path / "ub"), HOME=str(tmp_path))
    r = subprocess.run([str(stack.prefix / "bin" / "pip"), "install", "--no-index", "--find-links",
                        str(wheelhouse), "userpkg"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "ub").glob(f"lib/python{PY_XY}/site-packages/userpkg"))
    assert not list(stack.site_packages.glob("userpkg*"))


def test_root_not_writable_is_bad_input(stack: StackRecord, wheelhouse: Path, user: users.TestUser,
                                        user_sitestack: dict[str, str], workdir: Path) -> None:
    spec = workdir / "user-spec.toml"
    spec.write_text(spec_text("x", ["tinyapp"], wheelhouse).replace(sys.executable, str(stack.python_exe)))
    spec.chmod(0o644)
    target = workdir / "root-owned"
    target.mkdir(exist_ok=True)
    r = users.run_as(user, [str(stack.python_exe), "-m", "sitestack", "build", str(spec), "--root",
                            str(target / "site"), "--version", "1"],
                     env={"PYTHONPATH": user_sitestack["PYTHONPATH"],
                          "PATH": f"{user_sitestack['PATH']}:/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
    assert "not writable" in r.stderr and "Traceback" not in r.stderr
    assert not (target / "site").exists()
