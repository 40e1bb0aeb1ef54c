"""`module spider NAME` finds the packages inside stacks: real Lmod 8.6, its cache too.

Each Lua modulefile declares every distribution with ``extensions()``. Environment Modules 5.2
has ``extensions`` only as a no-op (for Lmod compatibility): the Tcl files must still load.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from sitestack.core.layout import SiteRoot
from sitestack.core.records import StackRecord
from tests.helpers import modules
from tests.helpers.findsite import FindSite, find_site
from tests.helpers.modules import run_module_script

UPDATE_CACHE = Path("/usr/share/lmod/lmod/libexec/update_lmod_system_cache_files")


@pytest.fixture(scope="module")
def fs(workdir: Path, wheelhouse: Path) -> FindSite:
    return find_site(workdir, wheelhouse)


def spider(mp: Path, args: str, tmp_path: Path, *, env: dict[str, str] | None = None) -> str:
    """`module ARGS` under real Lmod with `mp` on MODULEPATH; stdout+stderr (spider writes to stderr)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)  # Lmod's user cache goes under HOME: a fresh one per test
    r = run_module_script("lmod", f"module use {shlex.quote(str(mp))}\nmodule {args}\n", errexit=False,
                          env={"HOME": str(home), **(env or {})})
    return r.stdout + r.stderr


def providers(text: str) -> set[str]:
    """The stack versions an extension's spider page names as providing it."""
    _, _, tail = text.partition("provided by the following modules")
    return set(re.findall(r"^\s+((?:conda|tools)/[\w.-]+)\s*$", tail, re.M))


def test_spider_lists_package_versions_as_extensions(fs: FindSite, tmp_path: Path) -> None:
    modules.require("lmod")
    out = spider(fs.root.lmod_dir, "--ignore_cache spider numpy", tmp_path)
    assert "numpy/2.3.5 (E)" in out and "numpy/2.4.6 (E)" in out, out
    assert "extensions provided by another module" in out


def test_spider_version_names_the_stacks_that_provide_it(fs: FindSite, tmp_path: Path) -> None:
    modules.require("lmod")
    mp = fs.root.lmod_dir
    assert providers(spider(mp, "--ignore_cache spider numpy/2.4.6", tmp_path)) == {"conda/2025-01-01"}
    # tinyapp is in three stack versions of two names.
    assert providers(spider(mp, "--ignore_cache spider tinyapp/1.0", tmp_path)) == {
        "conda/2024-01-01", "conda/2025-01-01", "tools/1.0"}


def test_hidden_and_deprecated_follow_lmod(fs: FindSite, tmp_path: Path) -> None:
    """Hidden versions (hide_version) drop out of spider unless --show_hidden; a deprecated
    version is an ordinary module to spider (its message shows on load)."""
    modules.require("lmod")
    mp = fs.root.lmod_dir
    # numpy 2.3.5 is in the hidden 2023 version and the deprecated 2024 one.
    assert providers(spider(mp, "--ignore_cache spider numpy/2.3.5", tmp_path)) == {"conda/2024-01-01"}
    assert providers(spider(mp, "--ignore_cache --show_hidden spider numpy/2.3.5", tmp_path)) == {
        "conda/2023-01-01", "conda/2024-01-01"}
    # onlyold and basepkg are only in the hidden version.
    out = spider(mp, "--ignore_cache spider onlyold", tmp_path)
    assert 'Unable to find: "onlyold"' in out and "(E)" not in out
    out = spider(mp, "--ignore_cache --show_hidden spider onlyold/1.0", tmp_path)
    assert providers(out) == {"conda/2023-01-01"}
    out = spider(mp, "load conda/2024-01-01", tmp_path)
    assert "conda/2024-01-01 is deprecated: use conda/2025-01-01 <b>now</b>" in out


def test_spider_system_cache(fs: FindSite, tmp_path: Path) -> None:
    """A cache made by update_lmod_system_cache_files carries the extensions; spider reads it
    (a modulefile removed after caching is still listed) until the cache is regenerated."""
    modules.require("lmod")
    if not UPDATE_CACHE.is_file():
        pytest.skip(f"{UPDATE_CACHE} missing")
    mp = tmp_path / "modulefiles"
    shutil.copytree(fs.root.lmod_dir, mp)  # a copy we may change; same stacks
    cache = tmp_path / "cache"
    cache.mkdir()
    rc = tmp_path / "lmodrc.lua"
    rc.write_text(f'scDescriptT = {{ {{ ["dir"] = "{cache}", ["timestamp"] = "{cache}/timestamp" }} }}\n')
    env = {"LMOD_RC": str(rc)}

    def regenerate() -> None:
        r = run_module_script("lmod", f'"{UPDATE_CACHE}" -d "{cache}" -t "{cache}/timestamp" "{mp}"\n',
                              env=env, errexit=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (cache / "spiderT.lua").is_file()

    regenerate()
    assert "numpy/2.4.6" in (cache / "spiderT.lua").read_text()
    cached = spider(mp, "spider numpy", tmp_path, env=env)
    assert cached == spider(mp, "--ignore_cache spider numpy", tmp_path, env=env)
    assert "numpy/2.4.6 (E)" in cached
    assert providers(spider(mp, "spider numpy/2.4.6", tmp_path, env=env)) == {"conda/2025-01-01"}

    (mp / "conda" / "2025-01-01.lua").unlink()
    assert "numpy/2.4.6 (E)" in spider(mp, "spider numpy", tmp_path, env=env), "spider did not read the cache"
    assert "numpy/2.4.6" not in spider(mp, "--ignore_cache spider numpy", tmp_path, env=env)
    regenerate()
    out = spider(mp, "spider numpy", tmp_path, env=env)
    assert "numpy/2.4.6" not in out and "numpy/2.3.5 (E)" in out


def test_tcl_files_with_extensions_still_load(stack: StackRecord, site_root: SiteRoot) -> None:
    """Environment Modules 5.2 reads `extensions` as a no-op: the file loads and unloads.

    (Not in the find site: Environment Modules expands `$VAR` in MODULEPATH entries, so a
    root with a `$` in its path cannot be used with it at all; see docs/modulefiles.md.)
    """
    modules.require("tcl")
    tcl = (site_root.tcl_dir / stack.name / stack.version).read_text()
    assert f'"shadowme/{stack.packages["shadowme"]}"' in next(ln for ln in tcl.splitlines() if ln.startswith("extensions ")), tcl
    script = (f"module use {shlex.quote(str(site_root.tcl_dir))}\nmodule load {stack.ref}\n"
              f'echo "GOT=$SITESTACK_STACK"\nmodule unload {stack.ref}\necho "AFTER=${{SITESTACK_STACK:-}}"\n')
    r = run_module_script("tcl", script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"GOT={stack.ref}" in r.stdout and "AFTER=\n" in r.stdout
    assert "ERROR" not in r.stderr and "invalid command" not in r.stderr, r.stderr
