"""doctor on problems made for real, and rebase across stack versions."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from sitestack.core.fsutil import rmtree
from sitestack.core.layout import SiteRoot
from sitestack.core.records import StackRecord
from tests.conftest import make_builder, run_cli
from tests.helpers.env import clean_env
from tests.helpers.layers import layer_sp, make_layer, pyrun, sh, tree_digest
from tests.helpers.wheels import make_wheel

OLD_REQS = ["shadowme==1.0", "tinyapp", "basepkg==1.0", "onlyold"]
NEW_REQS = ["shadowme==2.0", "tinyapp", "basepkg==2.0"]


@pytest.fixture(scope="module")
def doc_root(workdir: Path, wheelhouse: Path) -> SiteRoot:
    """A site root of this module's own: its stacks get hidden, deprecated and deleted."""
    root = SiteRoot(workdir / "site-doctor")
    root.path.mkdir()
    b = make_builder(root, wheelhouse)
    b("conda", "2021-01-01", OLD_REQS)
    b("conda", "2022-01-01", OLD_REQS)
    b("conda", "2023-01-01", NEW_REQS, default=True)
    return root


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, str]]]:
    r = run_cli("doctor", "--json", *args, env=env or clean_env())
    assert r.returncode in (0, 1), r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] == (r.returncode == 0)
    return r.returncode, data["findings"]


def test_doctor_hidden_and_deprecated_stack(doc_root: SiteRoot, tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "L", doc_root.path, "--stack", "conda/2021-01-01")
    assert doctor(str(layer))[0] == 0
    run_cli("hide", "conda/2021-01-01", "--root", str(doc_root.path), env=clean_env(), check=True)
    run_cli("deprecate", "conda/2021-01-01", "-m", "moving to 2023", "--root", str(doc_root.path),
            env=clean_env(), check=True)
    code, found = doctor(env=clean_env(VIRTUAL_ENV=str(layer)))  # the active layer by default
    assert code == 1
    assert [f["kind"] for f in found] == ["stack-hidden", "stack-deprecated"]
    assert "moving to 2023" in found[1]["message"]
    assert found[0]["fix"] == f"sitestack rebase {layer} conda/2023-01-01"
    sh(found[0]["fix"].replace("sitestack", f"{shlex.quote(sys.executable)} -m sitestack", 1), env=clean_env())
    assert doctor(str(layer)) == (0, [])
    assert "sitestack-stack = conda/2023-01-01" in (layer / "pyvenv.cfg").read_text()


def test_doctor_deleted_stack_copy(doc_root: SiteRoot, wheelhouse: Path, tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "L", doc_root.path, "--stack", "conda/2022-01-01")
    sh(f"{layer}/bin/python -m pip install -q --no-index --find-links {wheelhouse} layerpkg")
    rmtree(doc_root.prefix("conda", "2022-01-01"))
    code, found = doctor(str(layer))
    assert code == 1
    assert [f["kind"] for f in found] == ["stack-missing", "home-missing"]
    fix = found[0]["fix"]
    assert fix == f"sitestack rebase {layer} conda/2023-01-01 --allow-missing-stack"
    r = run_cli("rebase", str(layer), "conda/2023-01-01", env=clean_env())  # refused without the flag
    assert r.returncode == 2 and "both stacks must exist" in r.stderr
    run_cli(*shlex.split(fix)[1:], env=clean_env(), check=True)
    assert doctor(str(layer)) == (0, [])
    assert pyrun(layer, "import layerpkg, shadowme; print(shadowme.__version__)").stdout.strip() == "2.0"


def test_doctor_shell_userbase(stack: StackRecord, wheelhouse: Path, tmp_path: Path) -> None:
    ub = tmp_path / "ub"
    base = clean_env(PYTHONUSERBASE=str(ub))
    sh(f"{stack.python_exe} -m pip install -q --no-index --find-links {wheelhouse} -I --no-deps shadowme==2.0",
       env=base)
    loaded = clean_env(PYTHONUSERBASE=str(ub), SITESTACK_STACK=stack.ref, SITESTACK_PREFIX=str(stack.prefix),
                       PATH=f"{stack.prefix}/bin:{os.environ['PATH']}")
    code, found = doctor(env=loaded)
    assert code == 1
    assert [f["kind"] for f in found] == ["userbase-bin-not-on-path", "userbase-shadows-stack"]
    assert found[0]["fix"] == f'export PATH={ub}/bin:"$PATH"'
    sh(found[1]["fix"], env=loaded)  # the exact uninstall command
    assert not list(ub.glob("lib/python*/site-packages/shadowme*"))
    loaded["PATH"] = f"{ub}/bin:{loaded['PATH']}"
    assert doctor(env=loaded) == (0, [])


def test_doctor_two_stacks_on_path(stack: StackRecord, build_stack) -> None:
    newer = build_stack("conda", "2024-04-29", NEW_REQS)
    env = clean_env(SITESTACK_PREFIX=str(newer.prefix), SITESTACK_STACK=newer.ref,
                    PATH=f"{stack.prefix}/bin:{newer.prefix}/bin:/usr/bin:/bin")
    code, found = doctor(env=env)
    assert code == 1 and [f["kind"] for f in found] == ["two-stacks-on-path"]
    assert found[0]["fix"] == f"export PATH={newer.prefix}/bin:/usr/bin:/bin"  # keeps the loaded one


def test_doctor_broken_layer(stack: StackRecord, site_root, wheelhouse: Path, tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "L", site_root.path)
    sh(f"{layer}/bin/python -m pip install -q --no-index --find-links {wheelhouse} --no-deps needsnew")
    code, found = doctor(str(layer))
    assert code == 1 and [f["kind"] for f in found] == ["broken-requirement"]
    assert found[0]["fix"] == f"{layer}/bin/python -m pip install 'shadowme>=2'"


def test_rebase_moves_only_the_layers_own(stack: StackRecord, build_stack, site_root, wheelhouse: Path,
                                          tmp_path: Path) -> None:
    newer = build_stack("conda", "2024-04-29", NEW_REQS)
    wh = tmp_path / "wh"
    make_wheel(wh, "plugin", "1.0", requires=["basepkg<2"])
    make_wheel(wh, "plugin", "2.0", requires=["basepkg>=2"])
    layer = make_layer(tmp_path / "L", site_root.path)
    idx = f"--no-index --find-links {wheelhouse} --find-links {wh}"
    sh(f"{layer}/bin/python -m pip install -q {idx} needsnew layerpkg plugin==1.0")
    assert sorted(p.name for p in layer_sp(layer).glob("*.dist-info")) == [
        "layerpkg-1.0.dist-info", "needsnew-1.0.dist-info", "plugin-1.0.dist-info", "shadowme-2.0.dist-info"]
    r = run_cli("rebase", str(layer), newer.ref, "--find-links", str(wheelhouse), "--find-links", str(wh),
                "--no-index", "--json", env=clean_env(), check=True)
    changes = {c["name"]: (c["old"], c["new"], c["action"]) for c in json.loads(r.stdout)["changes"]}
    assert changes == {
        "layerpkg": ("1.0", "1.0", "kept"),
        "needsnew": ("1.0", "1.0", "kept"),
        "plugin": ("1.0", "2.0", "changed"),  # 1.0 needs basepkg<2: the new stack has 2.0
        "shadowme": ("2.0", "2.0", "from-stack"),
    }
    cfg = (layer / "pyvenv.cfg").read_text()
    assert f"home = {newer.prefix / 'bin'}" in cfg and f"sitestack-stack = {newer.ref}" in cfg
    assert str(tmp_path / ".L") not in cfg
    assert sorted(p.name for p in layer_sp(layer).glob("*.dist-info")) == [
        "layerpkg-1.0.dist-info", "needsnew-1.0.dist-info", "plugin-2.0.dist-info"]
    r = pyrun(layer, "import sys, shadowme, plugin, needsnew; print(sys.prefix, shadowme.__file__)")
    assert r.stdout.split() == [str(layer), f"{newer.site_packages}/shadowme/__init__.py"], r.stderr
    assert run_cli("check", str(layer), env=clean_env()).returncode == 0
    # The layer's pip still runs from the new stack, with the final path in its shebang.
    assert (layer / "bin" / "pip").read_text().startswith(f"#!{layer}/bin/python\n")
    sh(f"{layer}/bin/pip --version")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".L.") and "lock" not in p.name) == []


def test_failed_rebase_leaves_the_layer_byte_identical(stack: StackRecord, build_stack, site_root,
                                                       wheelhouse: Path, tmp_path: Path) -> None:
    newer = build_stack("conda", "2024-04-29", NEW_REQS)
    layer = make_layer(tmp_path / "L", site_root.path)
    # onlyold 1.0 (needs basepkg<2) cannot sit on a stack that fixes basepkg 2.0.
    sh(f"{layer}/bin/python -m pip install -q --no-index --find-links {wheelhouse} -I --no-deps onlyold")
    before = tree_digest(layer)
    r = run_cli("rebase", str(layer), newer.ref, env=clean_env())
    assert r.returncode == 3, r.stderr
    assert "do not resolve" in r.stderr
    assert tree_digest(layer) == before
    assert [p.name for p in tmp_path.iterdir() if ".rebase-" in p.name] == []
    # Bad input: unknown target stack, and a folder that is no venv.
    r = run_cli("rebase", str(layer), "conda/1999-01-01", env=clean_env())
    assert r.returncode == 2 and "no stack conda/1999-01-01" in r.stderr
    r = run_cli("rebase", str(tmp_path), newer.ref, env=clean_env())
    assert r.returncode == 2 and "is not a venv" in r.stderr
    assert tree_digest(layer) == before


def test_doctor_names_and_fixes_a_killed_install(stack: StackRecord, site_root, wheelhouse: Path,
                                                 tmp_path: Path) -> None:
    """A real `sitestack install` kill -9'd mid-move: doctor names its staging folder, leaves
    it while an install holds the layer's lock, and `doctor --fix` moves the layer back."""
    from sitestack.core.publish import HOST
    from sitestack.user.layer import layer_lock

    layer = make_layer(tmp_path / "L", site_root.path)
    before = tree_digest(layer)
    r = run_cli("install", "--layer", str(layer), "--find-links", str(wheelhouse), "--no-index", "layerpkg",
                env=clean_env(SITESTACK_TEST_CRASH_AT="install:after-merge"))
    assert r.returncode == -9, r.stderr
    (left,) = tmp_path.glob(".L.install-*")
    assert tree_digest(layer) != before  # layerpkg moved in, never committed
    code, found = doctor(str(layer))
    assert code == 1 and [f["kind"] for f in found] == ["install-interrupted"], found
    assert found[0]["subject"] == str(left) and "holds part of its changes" in found[0]["message"]
    assert found[0]["fix"] == f"sitestack doctor --fix {layer}"
    # A folder of a live process (this one) is an install still running; one whose name is
    # another layer's ("L.install-x") is not this layer's: neither is named nor touched.
    live = tmp_path / f".L.install-{HOST}-{os.getpid()}-0000"
    dead = _dead_pid()
    other = tmp_path / f".L.install-x.install-{HOST}-{dead}-0000"
    gone = tmp_path / f".L.install-{HOST}-{dead}-1111"  # killed while uv staged: no journal
    for p in (live, other, gone):
        (p / "stage").mkdir(parents=True)
    code, found = doctor(str(layer))
    assert [f["subject"] for f in found] == sorted([str(left), str(gone)])
    assert "nothing of it is in the layer" in next(f for f in found if f["subject"] == str(gone))["message"]
    # While an install holds the layer's lock its folder is its own: nothing named, nothing fixed.
    with layer_lock(layer):
        assert doctor(str(layer)) == (0, [])
        r = run_cli("doctor", "--fix", "--json", str(layer), env=clean_env(), check=True)
        assert json.loads(r.stdout)["fixed"] == [] and left.exists() and gone.exists()
    r = run_cli("doctor", "--fix", "--json", str(layer), env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert sorted(data["fixed"]) == sorted([str(left), str(gone)]) and data["findings"] == []
    assert tree_digest(layer) == before
    assert not left.exists() and not gone.exists() and live.exists() and other.exists()
    assert run_cli("install", "--layer", str(layer), "--find-links", str(wheelhouse), "--no-index", "layerpkg",
                   env=clean_env()).returncode == 0
    assert pyrun(layer, "import layerpkg").returncode == 0


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid
