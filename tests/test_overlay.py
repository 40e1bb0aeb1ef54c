"""Layers: `sitestack venv`, pip inside a layer, user-site isolation, inherit on/off, bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sitestack.core.records import StackRecord
from sitestack.user.layer import layer_lock
from tests.conftest import run_cli
from tests.helpers import modules, users
from tests.helpers.env import clean_env
from tests.helpers.layers import layer_sp, make_layer, pyrun, sh, stack_untouched


def test_venv_layout_records_stack(stack: StackRecord, site_root, tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "my_env", site_root.path)
    cfg = (layer / "pyvenv.cfg").read_text()
    assert f"home = {stack.prefix / 'bin'}\n" in cfg
    assert "include-system-site-packages = true\n" in cfg
    assert f"sitestack-stack = {stack.ref}\n" in cfg and f"sitestack-root = {site_root.path}\n" in cfg
    assert "sitestack-user-site = false\n" in cfg
    # The interpreter link points at the stack's python and is not resolved further.
    assert os.readlink(layer / "bin" / "python") == str(stack.python_exe)
    assert os.readlink(layer / "bin" / "python3") == "python"
    assert os.readlink(layer / "lib64") == "lib"
    r = pyrun(layer, "import sys, shadowme, tinyapp; print(sys.prefix); print(shadowme.__version__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(layer), "1.0"]
    assert (layer / "bin" / "activate").read_text().count(str(layer)) >= 1
    assert "__VENV_" not in (layer / "bin" / "activate").read_text()


def test_activated_pip_installs_into_layer_never_the_stack(stack: StackRecord, site_root, wheelhouse: Path,
                                                          tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "L", site_root.path)
    idx = f"--no-index --find-links {wheelhouse}"
    r = sh(f"source {layer}/bin/activate && command -v pip && pip install -q {idx} layerpkg needsnew "
           f"&& pip install -q {idx} -U shadowme==2.0 && python -c 'import layerpkg, shadowme; print(shadowme.__version__)'")
    out = r.stdout.splitlines()
    assert out[0] == f"{layer}/bin/pip"
    assert out[-1] == "2.0"
    names = sorted(p.name for p in layer_sp(layer).glob("*.dist-info"))
    # layerpkg's shadowme came from the stack; needsnew (shadowme>=2) shadowed it in the layer.
    assert names == ["layerpkg-1.0.dist-info", "needsnew-1.0.dist-info", "shadowme-2.0.dist-info"]
    assert list(stack.site_packages.glob("shadowme-*.dist-info"))[0].name == "shadowme-1.0.dist-info"
    stack_untouched(stack)  # as root, write bits stop nothing: pip itself must keep out


def test_no_inherit_layer_still_has_pip(stack: StackRecord, site_root, wheelhouse: Path, tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "iso", site_root.path, "--no-inherit")
    assert "include-system-site-packages = false\n" in (layer / "pyvenv.cfg").read_text()
    assert pyrun(layer, "import shadowme").returncode != 0
    sh(f"{layer}/bin/python -m pip install -q --no-index --find-links {wheelhouse} tinyapp")
    r = pyrun(layer, "import tinyapp, pip; print(tinyapp.__file__)")
    assert r.returncode == 0 and r.stdout.startswith(str(layer)), r.stderr
    stack_untouched(stack)


def test_user_site_isolated_unless_asked(stack: StackRecord, site_root, wheelhouse: Path, tmp_path: Path) -> None:
    ub = tmp_path / "ub"
    env = clean_env(PYTHONUSERBASE=str(ub))
    # A real user-base install with the stack's own python (its pip.conf makes --user the default).
    sh(f"{stack.python_exe} -m pip install -q --no-index --find-links {wheelhouse} userpkg", env=env)
    assert list((ub / "lib").glob("python*/site-packages/userpkg"))
    plain = tmp_path / "plain"
    sh(f"{stack.prefix}/bin/python3 -m venv --system-site-packages --without-pip {plain}", env=env)
    assert pyrun(plain, "import userpkg", env).returncode == 0  # the leak is real
    layer = make_layer(tmp_path / "isolated", site_root.path)
    r = pyrun(layer, "import site, sys; print(site.ENABLE_USER_SITE); import userpkg", env)
    assert r.returncode != 0 and r.stdout.strip() == "False" and "No module named 'userpkg'" in r.stderr
    opted = make_layer(tmp_path / "opted", site_root.path, "--user-site")
    r = pyrun(opted, "import userpkg; print(userpkg.__file__)", env)
    assert r.returncode == 0 and r.stdout.startswith(str(ub)), r.stderr


def _cfg(layer: Path) -> bytes:
    return (layer / "pyvenv.cfg").read_bytes()


def test_inherit_off_on_is_a_one_line_edit(stack: StackRecord, site_root, tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "L", site_root.path)
    orig = _cfg(layer)
    r = run_cli("inherit", str(layer), "off", env=clean_env(), check=True)
    assert "inherit off" in r.stdout
    assert _cfg(layer) == orig.replace(b"include-system-site-packages = true", b"include-system-site-packages = false")
    assert pyrun(layer, "import shadowme").returncode != 0
    run_cli("inherit", str(layer), "on", env=clean_env(), check=True)
    assert _cfg(layer) == orig
    assert pyrun(layer, "import shadowme").returncode == 0
    # A hand-edited file keeps its own spacing and every other byte.
    odd = orig.replace(b"include-system-site-packages = true", b"include-system-site-packages=TRUE  ")
    (layer / "pyvenv.cfg").write_bytes(odd)
    run_cli("inherit", str(layer), "off", env=clean_env(), check=True)
    assert _cfg(layer) == odd.replace(b"=TRUE  ", b"=false  ")


def test_inherit_waits_for_the_layer_lock(stack: StackRecord, site_root, tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "L", site_root.path)
    orig = _cfg(layer)
    released = threading.Event()
    with layer_lock(layer):
        p = subprocess.Popen([sys.executable, "-m", "sitestack", "inherit", str(layer), "off"],
                             env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert p.poll() is None and _cfg(layer) == orig
        released.set()
    assert p.wait(timeout=60) == 0
    assert b"include-system-site-packages = false" in _cfg(layer)


@pytest.mark.parametrize("system", modules.MODULE_SYSTEMS)
def test_layers_under_a_loaded_module(system: str, stack: StackRecord, build_stack, site_root,
                                      wheelhouse: Path, tmp_path: Path) -> None:
    newer = build_stack("conda", "2024-04-29", ["shadowme==2.0", "tinyapp", "basepkg==2.0"])
    modules.require(system)
    mp = site_root.lmod_dir if system == "lmod" else site_root.tcl_dir
    plain, ours = tmp_path / "plain", tmp_path / "ours"
    script = (f"module use {mp}\nmodule load conda/2024-04-29\n"
              f"python3 -m venv --system-site-packages {plain}\n"
              f"{sys.executable} -m sitestack venv {ours}\n")
    r = modules.run_module_script(system, script, env={"SITESTACK_ROOT": "/nonexistent"})
    assert r.returncode == 0, r.stdout + r.stderr
    # sitestack venv took the loaded module over the root's default (2022-07-19).
    assert f"sitestack-stack = {newer.ref}\n" in (ours / "pyvenv.cfg").read_text()
    assert f"home = {newer.prefix / 'bin'}" in (plain / "pyvenv.cfg").read_text()
    # The plain venv is recognised from its home.
    sh(f"{plain}/bin/python -m pip install -q --no-index --find-links {wheelhouse} -I shadowme==1.0")
    r = run_cli("shadows", str(plain), "--json", env=clean_env(), check=True)
    import json

    data = json.loads(r.stdout)
    assert data["stack"] == newer.ref
    found = {s["name"]: (s["layer"], s["stack"], s["active"]) for s in data["shadows"]}
    # ensurepip's pip is the layer's own copy of the stack's pip: a shadow too.
    assert found.pop("shadowme") == ("1.0", "2.0", "layer") and list(found) == ["pip"]
    run_cli("inherit", str(plain), "off", env=clean_env(), check=True)
    assert "include-system-site-packages = false" in (plain / "pyvenv.cfg").read_text()


def test_unprivileged_user_installs_into_a_layer(stack: StackRecord, site_root, wheelhouse: Path) -> None:
    user = users.ensure_user()
    home = users.make_user_dir(user)
    try:
        layer = home / "L"
        make_layer(layer, site_root.path)
        shutil.chown(layer, user.uid, user.gid)
        for dirpath, dirnames, filenames in os.walk(layer):
            for n in dirnames + filenames:
                os.lchown(os.path.join(dirpath, n), user.uid, user.gid)
        r = users.run_as(user, ["bash", "-c", f"source {layer}/bin/activate && pip install -q --no-index "
                                f"--find-links {wheelhouse} layerpkg && python -c 'import layerpkg, shadowme'"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert (layer_sp(layer) / "layerpkg").is_dir()
        # The stack itself refuses the user outright.
        r = users.run_as(user, [str(layer / "bin" / "python"), "-c",
                                f"open('{stack.site_packages}/x', 'w')"])
        assert r.returncode != 0 and "Permission denied" in r.stderr
    finally:
        shutil.rmtree(home)
    stack_untouched(stack)


def test_bad_input_is_one_line_exit_2(stack: StackRecord, site_root, tmp_path: Path) -> None:
    def bad(*args: str, code: int = 2) -> str:
        r = run_cli(*args, env=clean_env())
        assert r.returncode == code, (args, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("hint:")]
        assert len(lines) == 1 and lines[0].startswith("sitestack: error:"), r.stderr
        return lines[0]

    notvenv = tmp_path / "notvenv"
    notvenv.mkdir()
    assert "is not a venv" in bad("inherit", str(notvenv), "off")
    assert "is not a venv" in bad("shadows", str(notvenv))
    assert "is not a venv" in bad("check", str(notvenv))
    layer = make_layer(tmp_path / "L", site_root.path)
    orig = _cfg(layer)
    assert "on or off" in bad("inherit", str(layer), "maybe")
    assert "on or off" in bad("inherit", str(layer))
    assert "no stack" in bad("venv", str(tmp_path / "x"), "--stack", "nosuch", "--root", str(site_root.path))
    assert "no stack" in bad("venv", str(tmp_path / "x"), "--stack", "conda/1999-01-01", "--root", str(site_root.path))
    assert not (tmp_path / "x").exists()
    assert "already exists" in bad("venv", str(layer), "--stack", "conda", "--root", str(site_root.path), code=5)
    foreign = tmp_path / "foreign"
    sh(f"{users.DEBIAN_PYTHON} -m venv --without-pip {foreign}")
    fcfg = _cfg(foreign)
    assert "unknown stack" in bad("inherit", str(foreign), "off")
    assert "unknown stack" in bad("shadows", str(foreign))
    assert _cfg(foreign) == fcfg and _cfg(layer) == orig
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L", "foreign", "notvenv"]
