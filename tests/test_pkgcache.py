"""The site's compiled package cache: stacks share inodes, never depend on the cache."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from sitestack.build.stack import BuildLog, build
from sitestack.core.fsutil import rmtree
from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import Manifest, verify
from sitestack.core.records import StackRecord
from sitestack.site.registry import Site
from sitestack.site.spec import parse_spec
from tests.conftest import BuildStack, make_builder, spec_text
from tests.helpers.stacks import stale_bytecode


@pytest.fixture(scope="module")
def cache_root(workdir: Path, wheelhouse: Path) -> tuple[SiteRoot, BuildStack]:
    root = SiteRoot(workdir / "site-pkgcache")
    root.path.mkdir()
    return root, make_builder(root, wheelhouse)


def test_versions_share_package_inodes_not_scripts(cache_root: tuple[SiteRoot, BuildStack]) -> None:
    root, b = cache_root
    a = b("pc", "1", ["tinyapp", "shadowme==2.0"])
    c = b("pc", "2", ["tinyapp", "shadowme==2.0", "needsnew"])
    for rel in ("shadowme/__init__.py", "tinyapp/__init__.py"):
        assert os.stat(a.site_packages / rel).st_ino == os.stat(c.site_packages / rel).st_ino, rel
    pyc = next((a.site_packages / "shadowme" / "__pycache__").glob("*.pyc"))
    assert os.stat(pyc).st_ino == os.stat(c.site_packages / "shadowme" / "__pycache__" / pyc.name).st_ino
    # Console scripts name their own stack: copied, never shared.
    sa, sc = a.prefix / "bin" / "tinyapp", c.prefix / "bin" / "tinyapp"
    assert os.stat(sa).st_ino != os.stat(sc).st_ino
    assert sa.read_text().startswith(f"#!{a.prefix}/bin/python") and sc.read_text().startswith(f"#!{c.prefix}/bin/python")
    for rec in (a, c):
        assert subprocess.run([str(rec.prefix / "bin" / "tinyapp")], capture_output=True, text=True).stdout.strip() == "tinyapp 1.0"
    # The cache holds one entry per distribution, read-only.
    entries = sorted(p.name.rsplit("-", 1)[0] for p in (root.meta / "pypi").iterdir())
    assert entries == ["needsnew-1.0", "pip-23.2.1-py3-none-any.whl", "shadowme-2.0", "tinyapp-1.0"]
    assert not os.stat(root.meta / "pypi").st_mode & 0o022 or all(
        not os.stat(p).st_mode & 0o222 for p in (root.meta / "pypi").rglob("*.py"))


def test_a_rebuild_plans_its_link_while_the_resolve_runs(cache_root: tuple[SiteRoot, BuildStack]) -> None:
    """The next version of the same [packages] links what the newest one pinned, planned and its
    folders made during the resolve; another set of packages guesses nothing."""
    _root, b = cache_root
    first = b("pg", "1", ["tinyapp", "shadowme==2.0"])
    assert "link planned ahead" not in (first.records / "build.log").read_text()
    again = b("pg", "2", ["tinyapp", "shadowme==2.0"])
    log = (again.records / "build.log").read_text()
    assert "link planned ahead for 3 entries: the ones the resolve gave" in log, log
    _ok(again)
    other = b("pg", "3", ["tinyapp"])
    assert "link planned ahead" not in (other.records / "build.log").read_text()
    assert verify(other.prefix, Manifest.load(other.records / "manifest.json"), check_mode=True) == []


def _ok(rec: StackRecord) -> None:
    assert verify(rec.prefix, Manifest.load(rec.records / "manifest.json"), check_mode=True) == []
    r = subprocess.run([str(rec.python_exe), "-c", "import shadowme, tinyapp, pip"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_stacks_survive_removal_of_the_cache(cache_root: tuple[SiteRoot, BuildStack], wheelhouse: Path) -> None:
    root, b = cache_root
    a = b("pc", "1", ["tinyapp", "shadowme==2.0"])
    rmtree(root.meta / "pypi")
    _ok(a)
    # A stale temp entry of a killed build is cleared when the cache is next filled.
    (root.meta / "pypi").mkdir()
    (root.meta / "pypi" / ".tmp-killed").mkdir()
    build(parse_spec(spec_text("pc", ["tinyapp", "shadowme==2.0"], wheelhouse)), root, version="3",
          log=BuildLog(echo=False))
    _ok(Site(root).get("pc/3"))
    assert not (root.meta / "pypi" / ".tmp-killed").exists()
    assert len(list((root.meta / "pypi").iterdir())) == 3  # pip, shadowme, tinyapp


def test_build_options_get_their_own_entry(cache_root: tuple[SiteRoot, BuildStack], wheelhouse: Path) -> None:
    root, _ = cache_root
    text = spec_text("opts", ["tinyapp", "basepkg==1.0"], wheelhouse,
                     extra='\n[packages.build.basepkg]\nenv = { SOME_FLAG = "1" }\n')
    build(parse_spec(text), root, version="1", log=BuildLog(echo=False))
    rec = Site(root).get("opts/1")
    assert rec.packages["basepkg"] == "1.0"
    log = (rec.records / "build.log").read_text()
    assert "installing basepkg with its build env" in log  # its own uv call, with its own env
    # Keyed by its options: an entry apart from a plain basepkg-1.0 one, and linked from there.
    src = [p for p in (root.meta / "pypi").iterdir() if p.name.startswith("basepkg-1.0-src-")]
    assert len(src) == 1
    init = rec.site_packages / "basepkg" / "__init__.py"
    assert os.stat(init).st_ino == os.stat(src[0] / "tree" / init.relative_to(rec.prefix)).st_ino


def test_scripts_name_the_stack_python_not_the_installing_one(workdir: Path, wheelhouse: Path) -> None:
    """uv installs a cold cache's wheels with the source interpreter while the stack's own is
    copied; every script must still run the stack's python, also where the path is too long
    for a '#!' line (the /bin/sh exec trick)."""
    import sys

    root = SiteRoot(workdir / ("site-long-" + "p" * 120))
    root.path.mkdir()
    rec = make_builder(root, wheelhouse)("longpc", "1", ["tinyapp"])
    script = rec.prefix / "bin" / "tinyapp"
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n'''exec' ") and f"{rec.prefix}/bin/python" in text.splitlines()[1]
    r = subprocess.run([str(script)], capture_output=True, text=True)
    assert r.stdout.strip() == "tinyapp 1.0", r.stderr
    source = os.path.realpath(sys.base_prefix)
    for p in (rec.prefix / "bin").iterdir():
        if p.is_file() and not p.is_symlink() and not p.name.startswith("python"):
            assert source not in p.read_text(errors="replace"), p
    direct = next(rec.site_packages.glob("pip-*.dist-info")) / "direct_url.json"
    if direct.exists():
        assert source not in direct.read_text() and str(rec.prefix) in direct.read_text()


def _cache_dirs(root: SiteRoot) -> list[str]:
    return sorted(p.name for p in (root.meta / "pypi").iterdir())


def test_local_wheels_are_cached_during_the_resolve(workdir: Path, wheelhouse: Path) -> None:
    """The stdlib's pip and a spec's own wheel file need no resolve: their entries are filled
    beside it, once each, and the next build links them like any other."""
    root = SiteRoot(workdir / "site-early")
    root.path.mkdir()
    wheel = next(wheelhouse.glob("tinyapp-*.whl"))
    reqs = [f"tinyapp @ {wheel.as_uri()}", "shadowme==2.0"]
    build(parse_spec(spec_text("early", reqs, wheelhouse)), root, version="1", log=BuildLog(echo=False))
    rec = Site(root).get("early/1")
    log = (rec.records / "build.log").read_text()
    assert "installing 2 local wheel(s) into the site cache during the resolve" in log
    assert "installing 1 new distribution(s) into the site cache" in log  # shadowme alone
    assert "site cache: 0 hit(s), 3 new" in log
    # pip's bytecode is this interpreter's own where its site-packages holds the same pip
    # (ensurepip installed it from the bundled wheel); tinyapp's modules are compiled.
    bundled = next((Path(sysconfig.get_path("stdlib")) / "ensurepip" / "_bundled").glob("pip-*.whl"))
    purelib = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})["purelib"]
    same_pip = (Path(purelib) / f"pip-{bundled.name.split('-')[1]}.dist-info").is_dir()
    tinyapp_modules = len([n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")])
    # Another pip there may still share files with the bundled one: then only the line is sure.
    left = f"{tinyapp_modules} file(s) left to compile" if same_pip else ""
    assert f"reused from {purelib}; {left}" in log
    assert stale_bytecode(rec.site_packages)[1] == []
    names = [n.rsplit("-", 1)[0] for n in _cache_dirs(root)]
    assert names == ["pip-23.2.1-py3-none-any.whl", "shadowme-2.0", wheel.name], names
    _ok(rec)
    r = subprocess.run([str(rec.prefix / "bin" / "tinyapp")], capture_output=True, text=True)
    assert r.stdout.strip() == "tinyapp 1.0", r.stderr
    build(parse_spec(spec_text("early", reqs, wheelhouse)), root, version="2", log=BuildLog(echo=False))
    log2 = (Site(root).get("early/2").records / "build.log").read_text()
    assert "during the resolve" not in log2 and "site cache: 3 hit(s), 0 new" in log2
    assert [n.rsplit("-", 1)[0] for n in _cache_dirs(root)] == names


def test_a_failed_local_wheel_leaves_no_entry_and_no_stack(workdir: Path, wheelhouse: Path) -> None:
    root = SiteRoot(workdir / "site-early-bad")
    root.path.mkdir()
    # Its metadata resolves, its install fails (no WHEEL file): the early fill is what fails.
    bad = workdir / "broken-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("broken/__init__.py", "")
        z.writestr("broken-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: broken\nVersion: 1.0\n")
        z.writestr("broken-1.0.dist-info/RECORD", "")
    from sitestack.errors import BuildError

    with pytest.raises(BuildError) as e:
        build(parse_spec(spec_text("earlybad", [f"broken @ {bad.as_uri()}", "shadowme==2.0"], wheelhouse)),
              root, version="1", log=BuildLog(echo=False))
    assert "broken-1.0-py3-none-any.whl" in str(e.value) and "WHEEL" in str(e.value), str(e.value)
    left = _cache_dirs(root)  # the rest's entry is complete and kept; nothing else
    assert [n.rsplit("-", 1)[0] for n in left] == ["shadowme-2.0"], left
    assert not (root.path / "stacks" / "earlybad").exists() or not any((root.path / "stacks" / "earlybad").iterdir())
