"""Library calls under `umask 000`: what they make in the site tree gets exact modes.

The CLI tightens the umask (cli._run: umask |= 002); a program that imports sitestack does
not, so each library function must set its own modes, as build/publish do (make_dirs,
make_temp, atomic_write_*). Each test runs the real function in a child process whose umask
is 000 (the umask is per process: setting it here would race the other tests' threads).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.findsite import FindSite, find_site


def under_umask_000(code: str) -> None:
    """Run `code` (Python) in a child process with umask 000."""
    r = subprocess.run([sys.executable, "-c", "import os; os.umask(0)\n" + code],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def group_or_other_write(top: Path) -> dict[Path, str]:
    """Every folder or file under `top` (and `top`) that group or others may write, with its
    mode (links excepted)."""
    out = {}
    for p in [top, *top.rglob("*")]:
        st = p.lstat()
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
            out[p] = f"{stat.S_IMODE(st.st_mode):o}"
    return out


@pytest.fixture(scope="module")
def fs(workdir: Path, wheelhouse: Path) -> FindSite:
    return find_site(workdir, wheelhouse)


def test_build_catalog_under_umask_000(fs: FindSite, tmp_path: Path) -> None:
    out = tmp_path / "www" / "new" / "catalog"  # two missing parents: made by the call
    under_umask_000(
        "from pathlib import Path\n"
        "from sitestack.core.layout import SiteRoot\n"
        "from sitestack.site.catalog import build_catalog\n"
        "from sitestack.site.registry import Site\n"
        f"build_catalog(Site(SiteRoot(Path({str(fs.root.path)!r}))), Path({str(out)!r}))\n")
    assert (out / "index.html").is_file()
    assert group_or_other_write(tmp_path / "www") == {}
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "www" / "new").stat().st_mode) == 0o755
    pages = [p for p in out.rglob("*") if p.is_file()]
    assert pages and {stat.S_IMODE(p.stat().st_mode) for p in pages} == {0o644}
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_dir()} <= {0o755}
    lock = tmp_path / "www" / "new" / ".catalog.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600  # lock_mode: only the folder's writers


def test_conda_install_under_umask_000(conda_channel: Path, tmp_path: Path) -> None:
    """build_conda_prefix (the build's call): the site's package cache, the records folder
    and everything rattler extracts or links get no group/other write bit."""
    pytest.importorskip("rattler")
    root = tmp_path / "root"
    tmp, final = root / ".sitestack" / "tmp" / "c-x", root / "stacks" / "c" / "v1"
    under_umask_000(
        "from pathlib import Path\n"
        "from sitestack.conda.install import build_conda_prefix\n"
        "from sitestack.core.layout import SiteRoot\n"
        "from sitestack.site.spec import parse_spec\n"
        f"spec = parse_spec('[stack]\\nname = \"c\"\\n[conda]\\nchannels = [\"{conda_channel}\"]\\n'\n"
        "                  'packages = [\"python 3.11.*\", \"pyhello\"]\\n')\n"
        f"build_conda_prefix(spec, Path({str(tmp)!r}), Path({str(final)!r}), SiteRoot(Path({str(root)!r})))\n")
    assert (tmp / ".sitestack").is_dir() and any((root / ".sitestack" / "pkgs").iterdir())
    # The shared cache: folders, extracted files and rattler's lock files.
    assert group_or_other_write(root / ".sitestack" / "pkgs") == {}
    # The prefix: its folders and records; its package files keep the modes their packages
    # give (rattler writes an entry point 0775), which build's make_readonly strips.
    loose = group_or_other_write(root)
    assert {p: m for p, m in loose.items() if p.is_dir() or not p.is_relative_to(tmp)
            or p.is_relative_to(tmp / ".sitestack")} == {}
    for d in (root, root / ".sitestack", root / ".sitestack" / "pkgs", tmp / ".sitestack"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d
    assert os.access(tmp / "bin" / "python3.11", os.X_OK)
