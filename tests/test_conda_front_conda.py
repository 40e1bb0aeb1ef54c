"""The conda front door on a conda-channel stack (py-rattler installs into a clone, from the
stack's channels), and real conda wired declaratively where a stack carries it.

Real conda cannot be fetched from the registries this project reaches (PyPI, Debian, npm), so
the second part uses a hand-made `conda` package (tests/helpers/condachannel.py: conda's own
etc/profile.d/conda.sh and a stand-in bin/conda): it tests the wiring, not conda.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import Manifest, verify
from sitestack.core.records import StackRecord
from sitestack.site.registry import Site
from tests.conftest import run_cli
from tests.helpers import modules, users
from tests.helpers.condachannel import CONDA_PYTHON, conda_package, make_channel
from tests.helpers.modules import (
    MODULE_SYSTEMS,
    env_snapshot_script,
    parse_snapshots,
    run_module_script,
    strip_module_internals,
)

pytest.importorskip("rattler")
SNAP = env_snapshot_script()


def spec(name: str, channel: Path, packages: list[str]) -> str:
    pk = ", ".join(f'"{p}"' for p in packages)
    return (f'[stack]\nname = "{name}"\nsite = "testsite"\n\n[conda]\nchannels = ["{channel}"]\n'
            f'packages = [{pk}]\n\n[tests]\nimports = ["pyhello"]\n')


@pytest.fixture(scope="module")
def croot(workdir: Path, conda_channel: Path) -> tuple[SiteRoot, StackRecord]:
    root = SiteRoot(workdir / "site-conda-front")
    root.path.mkdir()
    (workdir / "cfront.toml").write_text(spec("cconda", conda_channel, [CONDA_PYTHON, "pyhello 1.*"]))
    run_cli("build", str(workdir / "cfront.toml"), "--root", str(root.path), "--version", "2024-01-01",
            "--default", check=True)
    return root, Site(root).get("cconda/2024-01-01")


def values(out: str) -> dict[str, list[str]]:
    """The script's `V_KEY=value` lines (no environment variable starts with V_)."""
    got: dict[str, list[str]] = {}
    for line in out.replace("\0", "\n").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("V_"):
            got.setdefault(key[2:], []).append(value.rstrip())
    return got


def test_conda_install_into_a_clone_of_a_conda_stack(croot: tuple[SiteRoot, StackRecord], conda_channel: Path,
                                                     user_home: tuple[users.TestUser, Path]) -> None:
    """rattler solves from the channels the stack was built from and installs into the clone
    (conda-meta and its history updated); the stack is never touched."""
    root, rec = croot
    user, home = user_home
    script = f"""module use {shlex.quote(str(root.lmod_dir))}
module load cconda
conda activate base
echo "V_BASE=$CONDA_DEFAULT_ENV $CONDA_SHLVL"
conda create --clone base -p "$HOME/envs/c clone" >/dev/null
conda activate "$HOME/envs/c clone"
echo "V_NAME=$CONDA_DEFAULT_ENV $CONDA_SHLVL"
conda install -y pyhello=2
echo "V_HELLO=$(pyhello)"
conda list | grep -E '^(pyhello|textpfx) ' | tr -s ' ' | sed 's/^/V_LIST=/'
conda install -c conda-forge pyhello 2>"$HOME/err"; echo "V_RC=$?"; echo "V_ERR=$(cat "$HOME/err" | head -1)"
conda remove nosuchpkg 2>"$HOME/err"; echo "V_RC=$?"; echo "V_ERR=$(cat "$HOME/err" | head -1)"
conda remove textpfx
echo "V_GONE=$(command -v pyhello || echo gone)"
conda deactivate
conda install pyhello 2>"$HOME/err"; echo "V_RC=$?"; echo "V_ERR=$(cat "$HOME/err" | head -1)"
"""
    r = run_module_script("lmod", script, user=user.name, env={"HOME": str(home)}, errexit=False)
    v = values(r.stdout)
    clone = home / "envs" / "c clone"
    assert "Traceback" not in r.stderr, r.stderr
    assert v["BASE"] == ["base 1"]  # the module set CONDA_SHLVL=1 for base already: a level of its own
    assert v["NAME"] == ["c clone 2"]  # in a folder called envs: its name, as conda names it
    assert v["HELLO"] == [f"pyhello 2.0 from {clone}"]
    assert sorted(v["LIST"]) == ["pyhello 2.0 pyh_0 channel", "textpfx 1.0 0 channel"]
    assert "conda packages come from the channels the stack was built from" in r.stdout
    assert v["RC"] == ["2", "2", "5"], r.stdout + r.stderr
    assert "channel conda-forge refused" in v["ERR"][0] and str(conda_channel) in v["ERR"][0]
    assert "nosuchpkg is not installed in" in v["ERR"][1]
    assert "site's stack cconda/2024-01-01" in v["ERR"][2] and "read-only" in v["ERR"][2]
    assert v["GONE"] == ["gone"]
    metas = {json.loads(p.read_text())["name"] for p in (clone / "conda-meta").glob("*.json")}
    # textpfx went, and pyhello 2.0, which needs it (conda's remove takes what needs a package)
    assert "pyhello" not in metas and "textpfx" not in metas and "python" in metas
    history = (clone / "conda-meta" / "history").read_text()
    assert "# cmd: conda install pyhello=2" in history and "+" in history and "# cmd: conda remove textpfx" in history
    assert verify(rec.prefix, Manifest.load(rec.prefix / ".sitestack" / "manifest.json"), check_mode=True) == []
    assert not (rec.prefix / "conda-meta" / "history").exists() or "pyhello-2.0" not in \
        (rec.prefix / "conda-meta" / "history").read_text()


@pytest.fixture(scope="module")
def real_conda(workdir: Path) -> tuple[SiteRoot, StackRecord]:
    """A [conda] stack whose packages include (a hand-made) conda."""
    channel = make_channel(workdir / "conda-with-conda", python_cache=workdir / "conda" / "pycache",
                           extra=[conda_package()])
    root = SiteRoot(workdir / "site-real-conda")
    root.path.mkdir()
    (workdir / "realconda.toml").write_text(spec("mconda", channel, [CONDA_PYTHON, "pyhello", "conda"]))
    run_cli("build", str(workdir / "realconda.toml"), "--root", str(root.path), "--version", "2024-02-02",
            "--default", check=True)
    return root, Site(root).get("mconda/2024-02-02")


@pytest.mark.parametrize("system", MODULE_SYSTEMS)
def test_real_conda_is_wired_declaratively(system: str, real_conda: tuple[SiteRoot, StackRecord],
                                           tmp_path: Path) -> None:
    """Its conda.sh was translated at build time: CONDA_EXE & co., conda's own functions,
    condabin on PATH; no execute{}. `conda` runs the stack's conda; unload takes it all back."""
    root, rec = real_conda
    p = rec.prefix
    text = (root.lmod_dir / "mconda" / "2024-02-02.lua").read_text() if system == "lmod" else \
        (root.tcl_dir / "mconda" / "2024-02-02").read_text()
    assert "execute" not in text and "source_sh" not in text and "conda.sh" not in text
    condarc = (p / ".condarc").read_text()
    assert "pkgs_dirs:\n  - ~/.conda/pkgs" in condarc and "envs_dirs:\n  - ~/.conda/envs" in condarc
    assert "channels:\n  - " in condarc and "conda-with-conda" in condarc
    history = (p / "conda-meta" / "history").read_text()
    assert history.startswith("==> ") and "::conda-24.1.2-0" in history and "# update specs:" in history
    mp = root.lmod_dir if system == "lmod" else root.tcl_dir
    (tmp_path / "home").mkdir()
    users.share_with_users(tmp_path)
    script = f"""module use {shlex.quote(str(mp))}
PS1='$ '
{SNAP}
module load mconda
type __conda_activate >/dev/null && echo "V_FUNCS=yes"
echo "V_EXE=$CONDA_EXE"
echo "V_CONDABIN=$(echo "$PATH" | tr ':' '\\n' | grep -c condabin)"
echo "V_VERSION=$(conda --version)"
conda activate
echo "V_ACTIVE=$CONDA_DEFAULT_ENV $CONDA_SHLVL $CONDA_PROMPT_MODIFIER"
conda deactivate
echo "V_SHLVL=$CONDA_SHLVL"
module unload mconda
{SNAP}
type conda >/dev/null 2>&1 || type __conda_exe >/dev/null 2>&1 || echo "V_GONE=yes"
"""
    r = run_module_script(system, script, env={"HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stdout + r.stderr
    v = values(r.stdout)
    assert v["FUNCS"] == ["yes"] and v["EXE"] == [str(p / "bin" / "conda")] and v["CONDABIN"] == ["1"]
    assert v["VERSION"] == ["conda 24.1.2 (sitestack test package, not conda)"]
    assert v["ACTIVE"] == ["base 1 (base)"] and v["SHLVL"] == ["0"]
    before, after = (strip_module_internals(s) for s in parse_snapshots(r.stdout))
    assert after == before, modules.env_diff(before, after)
    assert v["GONE"] == ["yes"]
