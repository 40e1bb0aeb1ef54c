"""The modulefiles, proven by real Lmod and real Environment Modules in real bash."""

from __future__ import annotations

from pathlib import Path

import pytest

from sitestack.build.stack import BuildLog, build
from sitestack.core.layout import SiteRoot
from sitestack.core.records import StackRecord
from sitestack.site.registry import Site
from sitestack.site.spec import parse_spec
from tests.conftest import BuildStack, make_builder, spec_text
from tests.helpers import modules, users
from tests.helpers.modules import (
    env_snapshot_script,
    parse_snapshots,
    run_module_script,
    strip_module_internals,
)

SYSTEMS = pytest.mark.parametrize("system", modules.MODULE_SYSTEMS)


def modulepath(root: SiteRoot, system: str) -> Path:
    return root.lmod_dir if system == "lmod" else root.tcl_dir


@pytest.fixture(scope="module")
def older(build_stack: BuildStack, stack: StackRecord) -> StackRecord:
    return build_stack("conda", "2021-01-01", ["shadowme==2.0", "tinyapp"])


@SYSTEMS
def test_load_use_extend_unload(system: str, stack: StackRecord, site_root: SiteRoot, wheelhouse: Path,
                                tmp_path: Path) -> None:
    users.share_with_users(tmp_path)
    snap = env_snapshot_script()
    script = f"""
module use "{modulepath(site_root, system)}"
{snap}
module load conda
{snap}
echo "PYTHON=$(command -v python3)"
echo "PIP=$(command -v pip)"
echo "UB=$PYTHONUSERBASE"
python -c "import shadowme, sys; print('IMPORT=' + shadowme.__file__)"
python -m venv --system-site-packages "$HOME/my_env"
"$HOME/my_env/bin/python" -c "import shadowme; print('VENV=' + shadowme.__file__)"
pip install --user --no-index --find-links "{wheelhouse}" userpkg >/dev/null
echo "SCRIPT=$(command -v userpkg-hello)"
userpkg-hello
module unload conda
{snap}
"""
    home = tmp_path / "home"
    home.mkdir()
    r = run_module_script(system, script, env={"HOME": str(home)})
    assert r.returncode == 0, r.stdout + r.stderr
    out = dict(line.split("=", 1) for line in r.stdout.split("\0")[-1].splitlines() if "=" in line) | dict(
        line.split("=", 1) for chunk in r.stdout.split("\0") for line in chunk.splitlines()
        if line.startswith(("PYTHON=", "PIP=", "UB=", "IMPORT=", "VENV=", "SCRIPT=")))
    bindir = stack.prefix / "bin"
    assert out["PYTHON"] == str(bindir / "python3") and out["PIP"] == str(bindir / "pip")
    ub = home / ".local" / "testsite" / "conda" / stack.version
    assert out["UB"] == str(ub)
    assert out["IMPORT"].startswith(str(stack.site_packages))
    assert out["VENV"].startswith(str(stack.site_packages))
    assert out["SCRIPT"] == str(ub / "bin" / "userpkg-hello")
    assert "userpkg 1.0" in r.stdout
    assert list(ub.glob(f"lib/python{stack.python_xy}/site-packages/userpkg"))
    before, loaded, after = parse_snapshots(r.stdout)
    assert loaded["SITESTACK_STACK"] == f"conda/{stack.version}"
    assert loaded["SITESTACK_PREFIX"] == str(stack.prefix)
    assert loaded["PATH"].split(":")[:2] == [str(ub / "bin"), str(bindir)]
    # Everything the module touched is back, whatever was installed meanwhile.
    assert strip_module_internals(after) == strip_module_internals(before)


@SYSTEMS
def test_older_version_and_user_base_isolation(system: str, stack: StackRecord, older: StackRecord,
                                               site_root: SiteRoot, wheelhouse: Path, tmp_path: Path) -> None:
    users.share_with_users(tmp_path)
    script = f"""
module use "{modulepath(site_root, system)}"
module load conda
pip install --user --no-index --find-links "{wheelhouse}" userpkg >/dev/null
module unload conda
module load conda/2021-01-01
echo "PYTHON=$(command -v python)"
python -c "import shadowme; print('SHADOW=' + shadowme.__version__)"
python -c "import userpkg" 2>/dev/null && echo LEAK || echo ISOLATED
command -v userpkg-hello >/dev/null && echo SCRIPT-LEAK || echo SCRIPT-ISOLATED
"""
    r = run_module_script(system, script, env={"HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"PYTHON={older.prefix / 'bin' / 'python'}" in r.stdout
    assert "SHADOW=2.0" in r.stdout
    assert "ISOLATED" in r.stdout and "LEAK" not in r.stdout.replace("SCRIPT-", "")
    assert "SCRIPT-ISOLATED" in r.stdout


# --- state: default, hidden, deprecated: in a site root of their own ------------------------

@pytest.fixture(scope="module")
def state_root(workdir: Path, wheelhouse: Path) -> tuple[SiteRoot, BuildStack]:
    root = SiteRoot(workdir / "site-state")
    root.path.mkdir()
    builder = make_builder(root, wheelhouse)
    builder("conda", "2022-07-19", ["tinyapp"], default=True)
    builder("conda", "2024-04-29", ["tinyapp", "shadowme==2.0"])
    return root, builder


def _run(system: str, root: SiteRoot, script: str) -> str:
    r = run_module_script(system, f'module use "{modulepath(root, system)}"\n' + script, errexit=False)
    return r.stdout + r.stderr


@SYSTEMS
def test_default_hide_deprecate(system: str, state_root: tuple[SiteRoot, BuildStack]) -> None:
    root, _ = state_root
    site = Site(root)
    load_default = 'module load conda && echo "GOT=$SITESTACK_STACK"'
    site.set_default("conda/2022-07-19")
    assert "GOT=conda/2022-07-19" in _run(system, root, load_default)
    site.set_default("conda/2024-04-29")
    assert "GOT=conda/2024-04-29" in _run(system, root, load_default)

    site.hide("conda/2022-07-19")
    avail = _run(system, root, "module avail conda 2>&1; module load conda/2022-07-19 && echo LOADED=$SITESTACK_STACK")
    assert "2024-04-29" in avail and "conda/2022-07-19" not in avail.split("LOADED=")[0]
    assert "LOADED=conda/2022-07-19" in avail, "a hidden version stays loadable by full name"
    site.hide("conda/2022-07-19", hidden=False)
    assert "2022-07-19" in _run(system, root, "module avail conda 2>&1")

    site.deprecate("conda/2022-07-19", "retired on 2025-01-01; use conda/2024-04-29")
    out = _run(system, root, "module load conda/2022-07-19 && echo LOADED=$SITESTACK_STACK")
    assert "retired on 2025-01-01; use conda/2024-04-29" in out and "LOADED=conda/2022-07-19" in out
    out = _run(system, root, "module load conda/2024-04-29")
    assert "retired" not in out
    site.undeprecate("conda/2022-07-19")
    assert "retired" not in _run(system, root, "module load conda/2022-07-19")


# --- escaping: every string from the spec, and a root path with a space --------------------

NASTY = 'q"uote \'single\' ]] [[x]] $HOME ${X} $(id) `id` [exec rm] {brace} back\\slash\\n tab\tend\nline2 é ü 日本 \U0001F40D'
# Environment values cannot hold a line break (the spec refuses it: Lmod would run it).
NASTY_ENV = NASTY.replace("\n", " ")


@pytest.fixture(scope="module")
def nasty_stack(workdir: Path, wheelhouse: Path) -> StackRecord:
    root = SiteRoot(workdir / "site with space")
    root.path.mkdir()
    def toml(s: str) -> str:
        return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")

    toml_str, env_str = toml(NASTY), toml(NASTY_ENV)
    extra = (f'\n[module]\nhelp = "{toml_str}"\nsetenv = {{ NASTY_VALUE = "{env_str}" }}\n'
             f'prepend_path = {{ NASTY_PATH = ["/opt/with space/{env_str}"] }}\n')
    text = spec_text("nasty", ["tinyapp"], wheelhouse, extra=extra).replace(
        'description = "test stack"', f'description = "{toml_str}"')
    spec = parse_spec(text)
    assert spec.description == NASTY and spec.module.help == NASTY
    build(spec, root, version="1.0", log=BuildLog(echo=False))
    return Site(root).get("nasty/1.0")


@SYSTEMS
def test_escaping_round_trips(system: str, nasty_stack: StackRecord) -> None:
    root = SiteRoot(nasty_stack.root)
    script = f"""
module use "{modulepath(root, system)}"
{env_snapshot_script()}
module load nasty
{env_snapshot_script()}
python -c "import tinyapp" && echo IMPORT-OK
module help nasty 2>&1
module whatis nasty 2>&1
module unload nasty
{env_snapshot_script()}
"""
    r = run_module_script(system, script, env={"LANG": "C.UTF-8"})
    assert r.returncode == 0, r.stdout + r.stderr
    before, loaded, after = parse_snapshots(r.stdout)
    assert loaded["NASTY_VALUE"] == NASTY_ENV
    assert loaded["NASTY_PATH"] == f"/opt/with space/{NASTY_ENV}"
    assert loaded["SITESTACK_PREFIX"] == str(nasty_stack.prefix) and " " in loaded["SITESTACK_PREFIX"]
    assert "IMPORT-OK" in r.stdout
    text = r.stdout + r.stderr
    for piece in NASTY.split("\n"):
        assert piece in text, f"help/whatis lost {piece!r}"
    assert strip_module_internals(after) == strip_module_internals(before)


def test_modulefiles_have_no_execute(stack: StackRecord, site_root: SiteRoot) -> None:
    lua = (site_root.lmod_dir / "conda" / f"{stack.version}.lua").read_text()
    tcl = (site_root.tcl_dir / "conda" / stack.version).read_text()
    for text in (lua, tcl):
        assert "execute" not in text and "system" not in text and "exec " not in text
    assert 'family("python")' in lua and 'family "python"' in tcl
    assert f"Python: {stack.python_xy}" in lua and "shadowme 1.0" in lua


def test_modulefiles_command_rewrites_from_records(stack: StackRecord, site_root: SiteRoot, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    lua = site_root.lmod_dir / "conda" / f"{stack.version}.lua"
    original = lua.read_text()
    lua.write_text("-- clobbered\n")
    stray = site_root.lmod_dir / "conda" / "1999-01-01.lua"
    stray.write_text(original)  # a modulefile of ours whose stack no longer exists
    run_cli("modulefiles", "--root", str(site_root.path), check=True)
    assert lua.read_text() == original
    assert not stray.exists()
