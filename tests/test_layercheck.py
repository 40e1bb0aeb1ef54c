"""shadows and check on real layers, with real pip installs from local wheels."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from sitestack.core.records import StackRecord
from tests.conftest import run_cli
from tests.helpers.env import clean_env
from tests.helpers.layers import make_layer, sh
from tests.helpers.wheels import make_wheel


def pip(layer: Path, wheelhouse: Path, *args: str) -> None:
    sh(f"{layer}/bin/python -m pip install -q --no-index --find-links {wheelhouse} {' '.join(args)}")


def check_json(layer: Path) -> tuple[int, dict]:
    r = run_cli("check", str(layer), "--json", env=clean_env())
    return r.returncode, json.loads(r.stdout)


def test_shadow_then_break_then_fix(stack: StackRecord, site_root, wheelhouse: Path, tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "L", site_root.path)
    pip(layer, wheelhouse, "needsnew")  # pip shadows shadowme 1.0 with 2.0 to satisfy it
    r = run_cli("shadows", str(layer), "--json", env=clean_env(), check=True)
    assert json.loads(r.stdout)["shadows"] == [
        {"name": "shadowme", "layer": "2.0", "stack": "1.0", "active": "layer"}]
    r = run_cli("shadows", str(layer), env=clean_env(), check=True)
    assert "shadowme  2.0    1.0" in r.stdout
    code, data = check_json(layer)
    assert code == 0 and data["ok"] and data["problems"] == []
    # Drop the shadow: the stack's shadowme 1.0 is too old for needsnew.
    sh(f"{layer}/bin/python -m pip uninstall -q -y shadowme")
    code, data = check_json(layer)
    assert code == 1
    [p] = data["problems"]
    assert (p["dist"], p["kind"], p["requirement"], p["found"], p["found_where"]) == \
        ("needsnew", "conflict", "shadowme>=2", "1.0", "stack")
    r = run_cli("check", str(layer), env=clean_env())
    assert r.returncode == 1 and "needsnew 1.0 requires shadowme>=2, but 1.0 is visible" in r.stdout
    sh(p["fix"] + f" -q --no-index --find-links {shlex.quote(str(wheelhouse))}")
    assert check_json(layer)[0] == 0


def test_older_shadow_breaks_a_stack_package(stack: StackRecord, site_root, wheelhouse: Path,
                                             tmp_path: Path) -> None:
    # The stack's onlyold needs basepkg<2; a layer that shadows basepkg with 2.0 breaks it.
    layer = make_layer(tmp_path / "L", site_root.path)
    pip(layer, wheelhouse, "-I", "--no-deps", "basepkg==2.0")
    code, data = check_json(layer)
    assert code == 1
    [p] = data["problems"]
    assert (p["dist"], p["where"], p["found"], p["found_where"]) == ("onlyold", "stack", "2.0", "layer")
    assert p["fix"] == f"{layer}/bin/python -m pip uninstall -y basepkg"
    sh(p["fix"])
    assert check_json(layer)[0] == 0


def test_missing_markers_and_extras(stack: StackRecord, site_root, wheelhouse: Path, tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    make_wheel(wh, "markerpkg", "1.0", requires=["nosuchdist; python_version < '3'",
                                                 "shadowme>=2; extra == 'new'", "basepkg"])
    make_wheel(wh, "wantsextra", "1.0", requires=["markerpkg[new]"])
    layer = make_layer(tmp_path / "iso", site_root.path, "--no-inherit")
    pip(layer, wh, "--no-deps", "markerpkg")
    code, data = check_json(layer)
    # Only the unconditional requirement is missing: the py2 marker and the extra do not apply.
    assert code == 1
    assert [(p["dist"], p["kind"], p["requirement"]) for p in data["problems"]] == \
        [("markerpkg", "missing", "basepkg")]
    run_cli("inherit", str(layer), "on", env=clean_env(), check=True)
    assert check_json(layer)[0] == 0  # the stack has basepkg
    pip(layer, wh, "--no-deps", "wantsextra")  # asks for markerpkg[new] -> shadowme>=2
    code, data = check_json(layer)
    assert code == 1
    assert [(p["dist"], p["requirement"], p["found"]) for p in data["problems"]] == \
        [("markerpkg", "shadowme>=2", "1.0")]


def test_check_sees_the_user_site_only_when_the_layer_does(stack: StackRecord, site_root, wheelhouse: Path,
                                                            tmp_path: Path) -> None:
    ub = tmp_path / "ub"
    env = clean_env(PYTHONUSERBASE=str(ub))
    sh(f"{stack.python_exe} -m pip install -q --no-index --find-links {wheelhouse} -I --no-deps basepkg==2.0",
       env=env)
    for name, extra in (("iso", ()), ("open", ("--user-site",))):
        layer = make_layer(tmp_path / name, site_root.path, *extra)
        r = run_cli("check", str(layer), "--json", env=env)
        data = json.loads(r.stdout)
        if extra:  # the user base's basepkg 2.0 now breaks the stack's onlyold
            assert r.returncode == 1 and data["problems"][0]["found_where"] == "user"
        else:
            assert r.returncode == 0 and data["ok"]
