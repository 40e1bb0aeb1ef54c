"""Conda stacks (py-rattler) against a local channel built by tests/helpers/condachannel.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("rattler")

from sitestack.conda import install as conda
from sitestack.conda import lock as condalock
from sitestack.conda import prefix as condaprefix  # noqa: E402
from sitestack.core.relocate import replace_padded  # noqa: E402
from sitestack.errors import BuildError, SpecError, UsageError, VerifyError  # noqa: E402
from sitestack.site.spec import CondaSpec  # noqa: E402
from tests.helpers.condachannel import (  # noqa: E402
    CONDA_PYTHON,
    PLACEHOLDER,
    pyhello_package,
    reindex,
    write_package,
)
from tests.helpers.stacks import PY_XY  # noqa: E402

ALL = (CONDA_PYTHON, "pyhello", "binpfx")


@pytest.fixture(scope="session")
def channel(conda_channel: Path) -> Path:
    return conda_channel


@pytest.fixture(scope="session")
def installed(channel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, conda.CondaResult]:
    """One install shared by the read-only tests: (build prefix, final prefix, result)."""
    base = tmp_path_factory.mktemp("site")
    build, final = base / "tmp" / "build", base / "stacks" / "conda" / "2024-01-01"
    result = conda.solve_and_install(CondaSpec((str(channel),), ALL), build, final, base / "pkgs")
    return build, final, result


def _spec(channel: Path, *packages: str) -> CondaSpec:
    return CondaSpec((str(channel),), packages)


def test_python_runs_from_the_installed_prefix(installed: tuple[Path, Path, conda.CondaResult]) -> None:
    build, final, result = installed
    assert result.python_exe == f"bin/python{PY_XY}"
    assert result.python_version.startswith(f"{PY_XY}.")
    assert result.python_xy == PY_XY
    out = subprocess.run(
        [str(build / result.python_exe), "-c",
         "import sys, sysconfig, pyhello; print(sys.prefix); print(sysconfig.get_config_var('prefix')); print(pyhello.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert out[0] == str(build)  # the interpreter finds its prefix from where it runs
    assert out[1] == str(final)  # text placeholders name the published path
    assert out[2] == "2.0"
    assert (build / "conda-meta" / "python-" f"{result.python_version}-h_sitestack_0.json").is_file()
    assert not (build / "CACHEDIR.TAG").exists()


def test_records_and_provides(installed: tuple[Path, Path, conda.CondaResult]) -> None:
    _build, _final, result = installed
    names = {r.name: r for r in result.records}
    assert set(names) == {"python", "pyhello", "textpfx", "binpfx"}
    assert names["pyhello"].version == "2.0"  # the highest of the two versions
    for r in result.records:
        assert r.url.startswith("file://") and len(r.sha256) == 64
    assert result.provides == frozenset({"pyhello"})
    assert result.provided_versions == {"pyhello": "2.0"}
    sj = result.stack_json()
    assert sj["conda_provides"] == ["pyhello"]
    json.dumps(sj)


def test_text_and_binary_placeholders_name_the_final_prefix(
    installed: tuple[Path, Path, conda.CondaResult],
) -> None:
    build, final, _result = installed
    assert (build / "etc/textpfx.conf").read_text() == f"prefix = {final}\nlibdir = {final}/lib\n"
    assert subprocess.run([str(build / "bin/textpfx")], capture_output=True, text=True).stdout == f"{final}\n"
    exe = build / "bin/binpfx"
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout == f"{final}\n"
    assert subprocess.run([str(exe), "d"], capture_output=True, text=True).stdout == f"{final}/share/binpfx\n"
    data = exe.read_bytes()
    assert PLACEHOLDER.encode() not in data
    assert (build / "bin/pyhello").read_text().startswith(f"#!{final}/bin/python{PY_XY}\n")
    assert str(build).encode() not in (build / "etc/textpfx.conf").read_bytes()


def test_solver_picks_between_versions(channel: Path, tmp_path: Path) -> None:
    r = conda.solve_and_install(_spec(channel, CONDA_PYTHON, "pyhello 1.*"),
                                tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")
    names = {x.name: x.version for x in r.records}
    assert names["pyhello"] == "1.0" and "textpfx" not in names


def test_unsatisfiable_spec_names_the_specs(channel: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError) as e:
        conda.solve_and_install(_spec(channel, CONDA_PYTHON, "toonew"),
                                tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")
    msg = str(e.value)
    assert f"'{CONDA_PYTHON}'" in msg and "'toonew'" in msg and "python >=3.99" in msg
    assert e.value.exit_code == 3
    assert not (tmp_path / "b").exists()


def test_missing_package_is_reported(channel: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="nosuchpkg"):
        conda.solve_and_install(_spec(channel, CONDA_PYTHON, "nosuchpkg"),
                                tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")


def test_invalid_match_spec_is_a_spec_error(channel: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        conda.solve_and_install(_spec(channel, CONDA_PYTHON, "pyhello 2.0"),
                                tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")
    assert "conda.packages[1]" in str(e.value) and e.value.exit_code == 2


@pytest.mark.parametrize("bad", ["missing-folder", "http://127.0.0.1:9/nochannel"])
def test_unreachable_channel(bad: str, tmp_path: Path) -> None:
    ch = bad if "://" in bad else str(tmp_path / bad)
    with pytest.raises(BuildError) as e:
        conda.solve_and_install(CondaSpec((ch,), ("python",)), tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")
    assert ch in str(e.value) and "cannot be" in str(e.value)
    assert not (tmp_path / "b").exists()


def test_unindexed_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "ch" / "noarch").mkdir(parents=True)
    with pytest.raises(BuildError, match="repodata.json"):
        conda.solve_and_install(CondaSpec((str(tmp_path / "ch"),), ("python",)),
                                tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")


def _copy_channel(channel: Path, dest: Path) -> Path:
    """Packages hardlinked (cheap), index files copied (index_fs may rewrite them)."""
    def link_or_copy(src: str, dst: str) -> None:
        if src.endswith((".conda", ".tar.bz2")):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(channel, dest, copy_function=link_or_copy, ignore=shutil.ignore_patterns(".tmp"))
    return dest


def test_corrupted_package_fails_its_hash(channel: Path, tmp_path: Path) -> None:
    ch = _copy_channel(channel, tmp_path / "ch")
    bad = pyhello_package("2.0", ["textpfx >=1.0"])
    bad.files[0].data += b"# tampered\n"
    (ch / "noarch" / "pyhello-2.0-pyh_0.conda").unlink()  # a hardlink: do not write through it
    write_package(bad, ch)  # repodata still has the old sha256
    with pytest.raises(VerifyError) as e:
        conda.solve_and_install(_spec(ch, CONDA_PYTHON, "pyhello"),
                                tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")
    assert "pyhello-2.0-pyh_0.conda" in str(e.value) and "sha256" in str(e.value)
    assert e.value.exit_code == 6
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "pkgs" / "pyhello-2.0-pyh_0").exists()


def test_lock_round_trip_and_rebuild(channel: Path, tmp_path: Path) -> None:
    r = conda.solve_and_install(_spec(channel, CONDA_PYTHON, "pyhello 1.*"),
                                tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")
    lock = tmp_path / "b" / ".sitestack" / conda.LOCK_NAME
    condalock.write_lock(lock, r, {"pyhello": "1.0"})  # conda-provided: left out
    condalock.add_pypi_to_lock(lock, {"six": "1.16.0"}, provides=r.provides)
    text = lock.read_text()
    assert text.startswith("# sitestack conda lock:") and "version:" in text
    for rec in r.records:
        assert rec.sha256 in text
    records, pins = condalock.read_lock(lock)
    assert records == r.records
    assert pins == {"six": "1.16.0"}
    # A rebuild from the lock installs exactly that set, even though a solve would pick 2.0.
    r2, pins2 = conda.install_from_lock(lock, tmp_path / "b2", tmp_path / "f2", tmp_path / "pkgs")
    assert r2.records == r.records and pins2 == pins
    assert r2.specs == (CONDA_PYTHON, "pyhello 1.*")
    assert (tmp_path / "b2" / f"lib/python{PY_XY}/site-packages/pyhello-1.0.dist-info").is_dir()


def test_read_lock_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        condalock.read_lock(tmp_path / "nope.lock")
    (tmp_path / "junk.lock").write_text("not: [a lock")
    with pytest.raises(UsageError, match="not a conda lock file"):
        condalock.read_lock(tmp_path / "junk.lock")


def test_two_installs_share_inodes_through_the_cache(channel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "pkgs"
    a = conda.solve_and_install(_spec(channel, *ALL), tmp_path / "a", tmp_path / "fa", cache)
    conda.solve_and_install(_spec(channel, CONDA_PYTHON, "pyhello 1.*"), tmp_path / "b", tmp_path / "fb", cache)
    rel = f"lib/python{a.python_xy}/os.py"
    sa, sb = (tmp_path / "a" / rel).stat(), (tmp_path / "b" / rel).stat()
    assert sa.st_ino == sb.st_ino and sa.st_nlink >= 3  # cache + two stacks
    # Files that carry the prefix are written per stack, never shared.
    sysconf = next((tmp_path / "a" / f"lib/python{a.python_xy}").glob("_sysconfigdata_*.py")).name
    ia = (tmp_path / "a" / f"lib/python{a.python_xy}" / sysconf).stat().st_ino
    ib = (tmp_path / "b" / f"lib/python{a.python_xy}" / sysconf).stat().st_ino
    assert ia != ib


def test_read_only_cache_still_installs(channel: Path, tmp_path: Path) -> None:
    """Publishing makes hardlinked cache files read-only; the next stack still links them."""
    from sitestack.core.fsutil import make_readonly, make_writable

    cache = tmp_path / "pkgs"
    conda.solve_and_install(_spec(channel, *ALL), tmp_path / "a", tmp_path / "fa", cache)
    make_readonly(tmp_path / "a")
    try:
        r = conda.solve_and_install(_spec(channel, *ALL), tmp_path / "b", tmp_path / "fb", cache)
        assert (tmp_path / "b" / r.python_exe).exists()
        assert (tmp_path / "b/etc/textpfx.conf").read_text().startswith(f"prefix = {tmp_path / 'fb'}\n")
    finally:
        make_writable(tmp_path / "a")


def _clone(src: Path, dest: Path) -> None:
    """Like a same-filesystem clone: hardlinks everywhere, so writes must make new inodes."""
    shutil.copytree(src, dest, symlinks=True, copy_function=os.link)


def test_relocate_clone_rewrites_text_binary_and_meta(
    installed: tuple[Path, Path, conda.CondaResult], tmp_path: Path,
) -> None:
    build, final, _r = installed
    before = (build / "bin/binpfx").read_bytes()
    new = tmp_path / ("a-much-longer-clone-path-than-the-original-stack-prefix-" + "x" * 60)
    assert len(str(new)) > len(str(final))
    _clone(build, new)
    changed = condaprefix.relocate_conda(new, str(final), str(new))
    assert "bin/binpfx" in changed and "etc/textpfx.conf" in changed and "bin/pyhello" in changed
    assert subprocess.run([str(new / "bin/binpfx")], capture_output=True, text=True).stdout == f"{new}\n"
    assert subprocess.run([str(new / "bin/binpfx"), "d"], capture_output=True, text=True).stdout == f"{new}/share/binpfx\n"
    assert (new / "etc/textpfx.conf").read_text() == f"prefix = {new}\nlibdir = {new}/lib\n"
    assert f"{new}/bin/python{PY_XY}" in (new / "bin/pyhello").read_text()  # sh trick: > 127 bytes
    assert (build / "bin/binpfx").read_bytes() == before  # the source stack is untouched
    meta = json.loads(next((new / "conda-meta").glob("binpfx-*.json")).read_text())
    entry = meta["paths_data"]["paths"][0]
    assert entry["sha256_in_prefix"] == hashlib.sha256((new / "bin/binpfx").read_bytes()).hexdigest()
    # ... and back again, shorter: a clone of a clone.
    back = tmp_path / "c"
    _clone(new, back)
    condaprefix.relocate_conda(back, str(new), str(back))
    assert subprocess.run([str(back / "bin/binpfx")], capture_output=True, text=True).stdout == f"{back}\n"


def test_relocate_too_long_prefix_writes_nothing(
    installed: tuple[Path, Path, conda.CondaResult], tmp_path: Path,
) -> None:
    build, final, _r = installed
    reloc = condaprefix.conda_relocation(build)
    assert reloc.binary_files == ("bin/binpfx",)
    assert reloc.shortest_placeholder == len(PLACEHOLDER)
    assert "etc/textpfx.conf" in reloc.text_files and "bin/pyhello" in reloc.text_files
    clone = tmp_path / "clone"
    _clone(build, clone)
    too_long = "/" + "y" * (len(PLACEHOLDER) + 5)
    snap = {p: (clone / p).read_bytes() for p in ("bin/binpfx", "etc/textpfx.conf")}
    with pytest.raises(UsageError, match="choose a shorter path"):
        condaprefix.check_new_prefix(build, too_long)
    with pytest.raises(UsageError, match="bin/binpfx"):
        condaprefix.relocate_conda(clone, str(final), too_long)
    assert {p: (clone / p).read_bytes() for p in snap} == snap


def test_replace_padded() -> None:
    data = b"AA/old/x\0\0\0\0\0\0BB/old\0\0\0\0CC"
    assert replace_padded(data, b"/old", b"/n") == b"AA/n/x\0\0\0\0\0\0\0\0BB/n\0\0\0\0\0\0CC"
    grown = replace_padded(data, b"/old", b"/longer")
    assert grown == b"AA/longer/x\0\0\0BB/longer\0CC"  # grew into the padding
    with pytest.raises(UsageError):
        replace_padded(data, b"/old", b"/much-longer-than-room")
    with pytest.raises(UsageError):  # the byte after the terminator is not padding
        replace_padded(b"/old\0X", b"/old", b"/old2")


def test_check_conda_files_catches_overwrites(channel: Path, tmp_path: Path) -> None:
    conda.solve_and_install(_spec(channel, *ALL), tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")
    snap = condaprefix.snapshot_conda_files(tmp_path / "b")
    condaprefix.check_conda_files(tmp_path / "b", snap)  # untouched: fine
    init = tmp_path / f"b/lib/python{PY_XY}/site-packages/pyhello/__init__.py"
    init.unlink()  # never write through a hardlink into the cache
    init.write_text("# replaced by a pypi wheel\n")
    with pytest.raises(BuildError, match="conda package pyhello"):
        condaprefix.check_conda_files(tmp_path / "b", snap)


def test_pypi_conflicts() -> None:
    provided = {"pyhello": "2.0"}
    assert conda.pypi_conflicts(["pyhello>=1", "six"], provided) == []
    assert conda.pypi_conflicts(["pyhello<2"], provided) == ["pyhello<2 (conda installed pyhello 2.0)"]


def test_build_conda_prefix_writes_the_lock(channel: Path, tmp_path: Path) -> None:
    from sitestack.core.layout import SiteRoot
    from sitestack.site.spec import parse_spec

    spec = parse_spec(
        f'[stack]\nname = "c"\n[conda]\nchannels = ["{channel}"]\npackages = ["{CONDA_PYTHON}", "pyhello"]\n'
    )
    root = SiteRoot(tmp_path / "root")
    tmp, final = root.tmp / "c-x", root.prefix("c", "v1")
    version, xy, extra = conda.build_conda_prefix(spec, tmp, final, root)
    assert xy == PY_XY and version.startswith(f"{PY_XY}.")
    assert extra["conda_provides"] == ["pyhello"]
    assert (tmp / ".sitestack" / conda.LOCK_NAME).is_file()
    assert any((root.meta / "pkgs").iterdir())


def test_channel_can_be_extended_and_reindexed(channel: Path, tmp_path: Path) -> None:
    ch = _copy_channel(channel, tmp_path / "ch")
    write_package(pyhello_package("3.0", []), ch)
    reindex(ch)
    r = conda.solve_and_install(_spec(ch, CONDA_PYTHON, "pyhello"), tmp_path / "b", tmp_path / "f", tmp_path / "pkgs")
    assert {x.name: x.version for x in r.records}["pyhello"] == "3.0"
