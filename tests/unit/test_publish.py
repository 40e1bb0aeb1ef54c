"""core.publish on temp trees: stale temps, failures, and never overwriting a version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sitestack.core import publish
from sitestack.core.publish import HOST, clear_stale, make_temp, owner, temp_tree


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # reaped: no process has it (pids are not reused this fast)


def test_temp_names_carry_host_and_pid(tmp_path: Path) -> None:
    t = make_temp(tmp_path, ".x.clone-")
    assert t.parent == tmp_path and t.is_dir()
    assert owner(t.name, ".x.clone-") == (HOST, os.getpid())
    assert oct(t.stat().st_mode & 0o777) == oct(0o755)
    assert owner(".x.clone-killed", ".x.clone-") is None
    # Fields are read from the right: a build's temp carries its version before them.
    assert owner(f"py-2025-01-{HOST}-42-ab12", "py-") == (HOST, 42)


def test_stale_temp_of_a_dead_pid_is_removed_a_live_one_kept(tmp_path: Path) -> None:
    dead = tmp_path / f".x.clone-{HOST}-{_dead_pid()}-abcd"
    live = tmp_path / f".x.clone-{HOST}-{os.getpid()}-abcd"
    other_host = tmp_path / f".x.clone-elsewhere-{_dead_pid()}-abcd"
    unparsable = tmp_path / ".x.clone-killed"
    other_name = tmp_path / f".y.clone-{HOST}-{_dead_pid()}-abcd"
    for d in (dead, live, other_host, unparsable, other_name):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f").write_text("x")
    os.chmod(dead / "sub", 0o555)  # a half-published read-only tree still goes
    assert clear_stale(tmp_path, ".x.clone-") == [dead]
    assert not dead.exists()
    assert live.is_dir() and other_host.is_dir() and unparsable.is_dir() and other_name.is_dir()


def test_locked_clears_every_match_but_live_ones(tmp_path: Path) -> None:
    live = f".tmp-{HOST}-{os.getpid()}-ab"  # e.g. another stack's build, under its own lock
    for name in (".tmp-killed", live, ".tmp-far-1-ab", f".tmp-v1-{HOST}-{_dead_pid()}-ab"):
        (tmp_path / name).mkdir()
    (tmp_path / "keep").mkdir()
    assert len(clear_stale(tmp_path, ".tmp-", locked=True)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [live, "keep"]
    assert clear_stale(tmp_path / "missing", ".tmp-") == []


def test_failure_leaves_nothing_at_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "v1"
    with pytest.raises(RuntimeError), temp_tree(tmp_path, ".v1.new-") as tmp:
        (tmp / "bin").mkdir()
        (tmp / "bin" / "python").write_text("x")
        os.chmod(tmp / "bin", 0o555)
        raise RuntimeError("build failed")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # the temp went too


def test_publish_renames_into_place(tmp_path: Path) -> None:
    dest = tmp_path / "stacks" / "v1"
    dest.parent.mkdir()
    with temp_tree(tmp_path, ".v1-") as tmp:
        (tmp / "f").write_text("new")
        publish.publish(tmp, dest, durable=True)
    assert (dest / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["stacks"]


@pytest.mark.parametrize("existing", ["full", "empty", "file", "link"])
def test_publish_never_overwrites_an_existing_version(tmp_path: Path, existing: str) -> None:
    dest = tmp_path / "v1"
    if existing == "full":
        dest.mkdir()
        (dest / "f").write_text("old")
    elif existing == "empty":
        dest.mkdir()
    elif existing == "file":
        dest.write_text("old")
    else:
        dest.symlink_to("nowhere")
    with pytest.raises(FileExistsError), temp_tree(tmp_path, ".v1-") as tmp:
        (tmp / "f").write_text("new")
        publish.publish(tmp, dest)
    if existing == "full":
        assert (dest / "f").read_text() == "old"
    assert os.path.lexists(dest)
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_allow_empty_takes_over_an_empty_folder_only(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    with temp_tree(tmp_path, ".layer.new-", mode=None) as tmp:
        (tmp / "pyvenv.cfg").write_text("home = /x\n")
        publish.publish(tmp, dest, allow_empty=True)
    assert (dest / "pyvenv.cfg").is_file()
    with pytest.raises(FileExistsError), temp_tree(tmp_path, ".layer.new-") as tmp:
        publish.publish(tmp, dest, allow_empty=True)


@pytest.mark.parametrize("use_exchange", [True, False])
def test_replace_swaps_and_the_old_tree_goes(tmp_path: Path, use_exchange: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if not use_exchange:  # the kernel or filesystem without RENAME_EXCHANGE
        monkeypatch.setattr(publish, "exchange", lambda a, b: False)
    dest = tmp_path / "clone"
    dest.mkdir()
    (dest / "f").write_text("old")
    with temp_tree(tmp_path, ".clone.clone-") as tmp:
        (tmp / "f").write_text("new")
        publish.publish(tmp, dest, replace=True)
        assert (tmp / "f").read_text() == "old"  # the old tree sits at the temp's path
    assert (dest / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["clone"]


def test_failed_swap_puts_the_old_tree_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "exchange", lambda a, b: False)
    dest = tmp_path / "clone"
    dest.mkdir()
    (dest / "f").write_text("old")
    with pytest.raises(OSError), temp_tree(tmp_path, ".clone.clone-") as tmp:
        os.rmdir(tmp)  # the new tree vanished: the rename in fails
        publish.publish(tmp, dest, replace=True)
    assert (dest / "f").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["clone"]
