"""`sitestack build` of a [conda] spec: rattler + uv into one published, read-only stack."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import Manifest, verify
from sitestack.core.records import StackRecord
from sitestack.site.registry import Site
from tests.conftest import run_cli
from tests.helpers.condachannel import CONDA_PYTHON
from tests.helpers.modules import (
    MODULE_SYSTEMS,
    env_snapshot_script,
    parse_snapshots,
    run_module_script,
    strip_module_internals,
)

pytest.importorskip("rattler")


def conda_spec(channel: Path, wheelhouse: Path, packages: list[str], pypi: list[str]) -> str:
    pk = ", ".join(f'"{p}"' for p in packages)
    py = ", ".join(f'"{p}"' for p in pypi)
    return (f'[stack]\nname = "cconda"\nsite = "testsite"\n\n[conda]\nchannels = ["{channel}"]\npackages = [{pk}]\n\n'
            f'[packages]\nrequirements = [{py}]\nfind-links = ["{wheelhouse}"]\nno-index = true\n\n'
            f'[tests]\nimports = ["pyhello", "tinyapp"]\ncommands = ["binpfx"]\n')


@pytest.fixture(scope="module")
def conda_root(workdir: Path) -> SiteRoot:
    root = SiteRoot(workdir / "site-conda")
    root.path.mkdir()
    return root


@pytest.fixture(scope="module")
def conda_stack(conda_root: SiteRoot, conda_channel: Path, wheelhouse: Path, workdir: Path) -> StackRecord:
    spec = workdir / "cconda.toml"
    spec.write_text(conda_spec(conda_channel, wheelhouse, [CONDA_PYTHON, "pyhello", "binpfx", "textpfx"], ["tinyapp"]))
    run_cli("build", str(spec), "--root", str(conda_root.path), "--version", "2024-01-01", "--default", check=True)
    return Site(conda_root).get("cconda/2024-01-01")


def test_conda_stack_is_published_like_any_stack(conda_stack: StackRecord) -> None:
    p = conda_stack.prefix
    assert conda_stack.kind == "conda"
    metas = {json.loads(f.read_text())["name"] for f in (p / "conda-meta").glob("*.json")}
    assert {"python", "pyhello", "binpfx", "textpfx"} <= metas
    assert (p / ".sitestack" / "conda.lock").is_file()
    assert verify(p, Manifest.load(p / ".sitestack" / "manifest.json"), check_mode=True) == []
    assert not any(os.lstat(os.path.join(d, n)).st_mode & 0o222 for d, ds, fs in os.walk(p) for n in ds + fs
                   if not os.path.islink(os.path.join(d, n)))
    # The PyPI layer went on top; the conda-provided dists were not installed again.
    assert conda_stack.packages["tinyapp"] == "1.0" and "pyhello" in conda_stack.packages
    out = subprocess.run([str(p / "bin" / "binpfx")], capture_output=True, text=True, check=True).stdout
    assert str(p) in out, "the binary placeholder names the published prefix"
    r = subprocess.run([str(conda_stack.python_exe), "-c", "import sys, pyhello, tinyapp; print(sys.prefix)"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == str(p), r.stderr


@pytest.mark.parametrize("system", MODULE_SYSTEMS)
def test_conda_module_sets_conda_prefix(system: str, conda_stack: StackRecord, conda_root: SiteRoot) -> None:
    mp = conda_root.lmod_dir if system == "lmod" else conda_root.tcl_dir
    snap = env_snapshot_script()
    r = run_module_script(system, f'module use "{mp}"\n{snap}\nmodule load cconda\n{snap}\n'
                          'python -c "import pyhello"\nmodule unload cconda\n' + snap)
    assert r.returncode == 0, r.stdout + r.stderr
    before, loaded, after = parse_snapshots(r.stdout)
    assert loaded["CONDA_PREFIX"] == str(conda_stack.prefix)
    assert loaded["CONDA_DEFAULT_ENV"] == "cconda/2024-01-01"
    assert strip_module_internals(after) == strip_module_internals(before)
    text = (mp / "cconda" / ("2024-01-01.lua" if system == "lmod" else "2024-01-01")).read_text()
    assert "execute" not in text


def test_rebuild_from_lock_gives_the_same_set(conda_stack: StackRecord, conda_root: SiteRoot, workdir: Path) -> None:
    lock = conda_stack.prefix / ".sitestack" / "conda.lock"
    run_cli("build", str(workdir / "cconda.toml"), "--root", str(conda_root.path), "--version", "2024-01-02",
            "--from-lock", str(lock), check=True)
    again = Site(conda_root).get("cconda/2024-01-02")
    assert again.packages == conda_stack.packages

    def metas(p: Path) -> set[tuple[str, str, str]]:
        return {(d["name"], d["version"], d["build"]) for d in
                (json.loads(f.read_text()) for f in (p / "conda-meta").glob("*.json"))}

    assert metas(again.prefix) == metas(conda_stack.prefix)
    # Two versions on one filesystem share the cache's inodes (files without a placeholder).
    a = conda_stack.prefix / "lib" / f"python{conda_stack.python_xy}" / "os.py"
    b = again.prefix / "lib" / f"python{again.python_xy}" / "os.py"
    assert os.stat(a).st_ino == os.stat(b).st_ino
    out = run_cli("list", "--root", str(conda_root.path), "--json", check=True).stdout
    rows = {r["version"]: r for r in json.loads(out)}
    # `list` reports real disk use: the second version adds little beyond the first.
    assert rows["2024-01-02"]["new_disk_bytes"] < 0.5 * rows["2024-01-02"]["disk_bytes"]
    assert rows["2024-01-01"]["new_disk_bytes"] == rows["2024-01-01"]["disk_bytes"]


def test_unsatisfiable_conda_spec_leaves_nothing(conda_root: SiteRoot, conda_channel: Path, wheelhouse: Path,
                                                 tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(conda_spec(conda_channel, wheelhouse, [CONDA_PYTHON, "toonew"], []))
    r = run_cli("build", str(spec), "--root", str(conda_root.path), "--version", "bad")
    assert r.returncode == 3 and "toonew" in r.stderr, r.stderr
    assert not (conda_root.stacks / "cconda" / "bad").exists()
    assert not [d for d in conda_root.tmp.iterdir() if d.name.startswith("cconda-")]


def test_pypi_conflict_with_conda_is_reported(conda_root: SiteRoot, conda_channel: Path, wheelhouse: Path,
                                              tmp_path: Path) -> None:
    spec = tmp_path / "conflict.toml"
    spec.write_text(conda_spec(conda_channel, wheelhouse, [CONDA_PYTHON, "pyhello 1.0.*"], ["pyhello>=2"]))
    r = run_cli("build", str(spec), "--root", str(conda_root.path), "--version", "conflict")
    assert r.returncode == 3 and "pyhello" in r.stderr, r.stderr
    assert not (conda_root.stacks / "cconda" / "conflict").exists()


def test_stage_of_conda_stack_rewrites_placeholders(conda_stack: StackRecord, conda_root: SiteRoot,
                                                    tmp_path: Path) -> None:
    to = tmp_path / "node-local"
    r = run_cli("stage", conda_stack.ref, "--root", str(conda_root.path), "--to", str(to), "--no-mpi", "--json")
    assert r.returncode == 0, r.stderr
    staged = Path(json.loads(r.stdout)["path"]) / "stack"
    out = subprocess.run([str(staged / "bin" / "binpfx")], capture_output=True, text=True, check=True).stdout
    assert str(staged) in out and str(conda_stack.prefix) not in out, "binary placeholder names the staged copy"
    assert str(conda_stack.prefix).encode() not in (staged / "bin" / "binpfx").read_bytes()
    xy = conda_stack.python_xy
    r = subprocess.run([str(staged / "bin" / f"python{xy}"), "-c", "import sys, pyhello; print(sys.prefix); print(pyhello.__file__)"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == [str(staged), str(staged / f"lib/python{xy}/site-packages/pyhello/__init__.py")]
    # conda-meta stays valid: every recorded sha256_in_prefix matches the rewritten file.
    import hashlib

    for meta in (staged / "conda-meta").glob("*.json"):
        for p in json.loads(meta.read_text()).get("paths_data", {}).get("paths", []):
            if p.get("sha256_in_prefix") and not os.path.islink(staged / p["_path"]):
                assert hashlib.sha256((staged / p["_path"]).read_bytes()).hexdigest() == p["sha256_in_prefix"], p["_path"]
