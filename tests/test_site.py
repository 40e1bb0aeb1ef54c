"""The site commands: list, show, default, deprecate, hide, verify, diff, with --json."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sitestack.core.layout import SiteRoot
from sitestack.site.registry import Site
from tests.conftest import BuildStack, make_builder, run_cli
from tests.helpers.stacks import PY_XY


@pytest.fixture(scope="module")
def root(workdir: Path, wheelhouse: Path) -> tuple[SiteRoot, BuildStack]:
    r = SiteRoot(workdir / "site-cmds")
    r.path.mkdir()
    b = make_builder(r, wheelhouse)
    b("conda", "2022-07-19", ["tinyapp", "shadowme==1.0"], default=True)
    b("conda", "2024-04-29", ["tinyapp", "shadowme==2.0", "needsnew"])
    return r, b


def cli(root: SiteRoot, *args: str) -> str:
    return run_cli(*args, "--root", str(root.path), check=True).stdout


def test_list_and_show_json(root: tuple[SiteRoot, BuildStack]) -> None:
    r, _ = root
    rows = json.loads(cli(r, "list", "--json"))
    assert [(x["name"], x["version"]) for x in rows] == [("conda", "2022-07-19"), ("conda", "2024-04-29")]
    old, new = rows
    assert old["default"] is True and new["default"] is False
    assert old["python"].startswith(f"{PY_XY}.") and new["packages"] == 4  # pip, tinyapp, shadowme, needsnew
    assert old["bytes"] > 10_000_000 and old["files"] > 1000
    shown = json.loads(cli(r, "show", "conda/2024-04-29", "--json"))
    assert shown["packages"]["needsnew"] == "1.0" and shown["packages"]["shadowme"] == "2.0"
    assert "needsnew" in shown["spec"] and shown["modulefiles"]["lmod"].endswith("conda/2024-04-29.lua")
    assert shown["user_base"] == "$HOME/.local/testsite/conda/2024-04-29"
    # NAME alone is the default version
    assert json.loads(cli(r, "show", "conda", "--json"))["version"] == "2022-07-19"
    text = cli(r, "list")
    assert "conda/2022-07-19" in text and "default" in text


def test_state_commands(root: tuple[SiteRoot, BuildStack]) -> None:
    r, _ = root
    cli(r, "default", "conda/2024-04-29")
    assert Site(r).default_version("conda") == "2024-04-29"
    cli(r, "deprecate", "conda/2022-07-19", "--message", "use the new one")
    cli(r, "hide", "conda/2022-07-19")
    rows = {x["version"]: x for x in json.loads(cli(r, "list", "--json"))}
    assert rows["2022-07-19"]["deprecated"] == "use the new one" and rows["2022-07-19"]["hidden"] is True
    assert rows["2024-04-29"]["default"] is True
    rc = (r.lmod_dir / "conda" / ".modulerc.lua").read_text()
    assert 'module_version("conda/2024-04-29", "default")' in rc and 'hide_version("conda/2022-07-19")' in rc
    assert "use the new one" in (r.lmod_dir / "conda" / "2022-07-19.lua").read_text()
    cli(r, "unhide", "conda/2022-07-19")
    cli(r, "undeprecate", "conda/2022-07-19")
    cli(r, "default", "conda/2022-07-19")
    rows = {x["version"]: x for x in json.loads(cli(r, "list", "--json"))}
    assert not rows["2022-07-19"]["hidden"] and rows["2022-07-19"]["deprecated"] is None


@pytest.mark.parametrize(("args", "needle"), [
    (["default", "conda/1999-01-01"], "no stack conda/1999-01-01"),
    (["default", "nope/1"], "no stack"),
    (["show", "nope"], "no stack named 'nope'"),
    (["hide", "conda"], "give NAME/VERSION"),
    (["deprecate", "conda/2022-07-19", "--message", "  "], "must not be empty"),
])
def test_bad_refs_exit_2(root: tuple[SiteRoot, BuildStack], args: list[str], needle: str) -> None:
    r, _ = root
    state = r.state_file.read_bytes()
    res = run_cli(*args, "--root", str(r.path))
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert r.state_file.read_bytes() == state


def test_diff(root: tuple[SiteRoot, BuildStack]) -> None:
    r, _ = root
    d = json.loads(cli(r, "diff", "conda/2022-07-19", "conda/2024-04-29", "--json"))
    changes = {c["name"]: (c["old"], c["new"]) for c in d["changes"]}
    assert changes == {"shadowme": ("1.0", "2.0"), "needsnew": (None, "1.0")}


def test_verify_detects_tampering(root: tuple[SiteRoot, BuildStack], workdir: Path) -> None:
    r, _ = root
    assert run_cli("verify", "--root", str(r.path)).returncode == 0
    rec = Site(r).get("conda/2024-04-29")
    target = rec.site_packages / "needsnew" / "__init__.py"
    saved = target.read_bytes()
    os.chmod(target, 0o644)
    try:
        target.write_bytes(saved + b"# tampered\n")  # root can; verify must notice
        res = run_cli("verify", "conda/2024-04-29", "--root", str(r.path), "--json")
        assert res.returncode == 1
        problems = json.loads(res.stdout)[0]["problems"]
        assert {"path": f"lib/python{PY_XY}/site-packages/needsnew/__init__.py", "problem": "changed"} in problems
        assert any(p["problem"] == "writable" for p in problems)
    finally:
        target.write_bytes(saved)
        os.chmod(target, 0o444)
    assert run_cli("verify", "conda/2024-04-29", "--root", str(r.path)).returncode == 0


def test_root_from_environment(root: tuple[SiteRoot, BuildStack]) -> None:
    r, _ = root
    env = dict(os.environ, SITESTACK_ROOT=str(r.path))
    env.pop("SITESTACK_STACK_ROOT", None)
    res = run_cli("list", "--json", env=env)
    assert res.returncode == 0 and len(json.loads(res.stdout)) == 2
    # With a stack module loaded (and no SITESTACK_ROOT), its site is the root.
    env.pop("SITESTACK_ROOT")
    env["SITESTACK_STACK_ROOT"] = str(r.path)
    res = run_cli("list", "--json", env=env)
    assert res.returncode == 0 and {x["version"] for x in json.loads(res.stdout)} == {"2022-07-19", "2024-04-29"}


def test_cpython_own_tests_pass_on_relocated_interpreter(root: tuple[SiteRoot, BuildStack], workdir: Path) -> None:
    """CPython's test_sysconfig, test_venv and test_site against the stack's interpreter."""
    r, _ = root
    rec = Site(r).get("conda/2022-07-19")
    import sysconfig

    src_test = Path(sysconfig.get_path("stdlib")) / "test"
    if not (src_test / "test_sysconfig.py").exists():
        pytest.skip(f"no CPython test suite at {src_test}")
    tests_dir = workdir / "cpython-tests"
    if not tests_dir.exists():
        shutil.copytree(src_test, tests_dir / "test", ignore=shutil.ignore_patterns("__pycache__"))
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(tests_dir), HOME=str(workdir), TMPDIR=str(workdir / "cpython-tmp"))
    Path(env["TMPDIR"]).mkdir(exist_ok=True)
    # test_underpth_* copy the bare executable into a temp folder, away from its lib/: an
    # $ORIGIN rpath deliberately does not follow it there (the stack's own layout is tested).
    res = subprocess.run([str(rec.python_exe), "-m", "test", "-q", "-i", "*test_underpth*",
                          "test_sysconfig", "test_site", "test_venv"],
                         capture_output=True, text=True, env=env, cwd=workdir, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "SUCCESS" in res.stdout


def test_venv_falls_back_to_the_roots_default(root: tuple[SiteRoot, BuildStack], tmp_path: Path) -> None:
    r, _ = root
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SITESTACK_", "VIRTUAL_ENV"))}
    res = run_cli("venv", str(tmp_path / "L"), "--root", str(r.path), "--json", env=env)
    assert res.returncode == 0, res.stderr
    default = Site(r).default_version("conda")
    assert json.loads(res.stdout)["stack"] == f"conda/{default}"
    assert f"sitestack-stack = conda/{default}" in (tmp_path / "L" / "pyvenv.cfg").read_text()
