"""core.fsutil on temp trees: atomic writes, exact modes, read-only trees, locks, removal."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitestack.core.fsutil import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_can_create,
    file_lock,
    lock_mode,
    make_dirs,
    make_readonly,
    make_writable,
    rmtree,
    shared_lock,
)
from sitestack.errors import ConflictError, UsageError


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_atomic_write_replaces_by_rename_and_leaves_no_temp(tmp_path: Path, umask_077: None) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "old\n")
    other = tmp_path / "hardlink"
    os.link(target, other)  # a reader holding the old inode keeps the old bytes
    atomic_write_bytes(target, b"new\n", mode=0o640)
    assert target.read_bytes() == b"new\n" and other.read_bytes() == b"old\n"
    assert os.stat(target).st_ino != os.stat(other).st_ino
    assert mode(target) == 0o640  # exact, whatever the umask
    assert mode(target.parent) == 0o755  # the folder it made, too
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_atomic_write_failure_keeps_old_content_and_removes_temp(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        atomic_write_bytes(d, b"x")  # the final rename cannot replace a non-empty folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert (d / "inside").is_dir()


def test_atomic_write_json_is_sorted_and_ends_in_newline(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    atomic_write_json(p, {"b": 1, "a": [1, 2]})
    text = p.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1, 2], "b": 1}


def test_make_dirs_exact_modes_and_existing_parents_untouched(tmp_path: Path, umask_077: None) -> None:
    os.chmod(tmp_path, 0o711)
    make_dirs(tmp_path / "a" / "b" / "c", mode=0o750)
    for p in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert mode(p) == 0o750
    assert mode(tmp_path) == 0o711
    make_dirs(tmp_path / "a" / "b" / "c")  # exists: nothing to do, nothing changed
    assert mode(tmp_path / "a" / "b" / "c") == 0o750


def make_tree(root: Path) -> Path:
    """A small tree with a script, a data file, a folder, a link inside and one outside."""
    outside = root.parent / f"{root.name}-outside.txt"
    outside.write_text("not ours")
    os.chmod(outside, 0o600)
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(root / "bin" / "tool", 0o700)
    (root / "data.txt").write_text("d")
    os.chmod(root / "data.txt", 0o600)
    os.chmod(root / "bin", 0o700)
    os.symlink("../data.txt", root / "bin" / "inside-link")
    os.symlink(outside, root / "outside-link")
    return outside


def test_make_readonly_strips_write_bits_and_opens_reads(tmp_path: Path) -> None:
    root = tmp_path / "t"
    outside = make_tree(root)
    make_readonly(root)
    assert mode(root / "bin" / "tool") == 0o555  # executable: r-x for all
    assert mode(root / "data.txt") == 0o444
    assert mode(root / "bin") == 0o555 and mode(root) == 0o555
    assert os.path.islink(root / "outside-link")
    assert mode(outside) == 0o600  # a link is never followed out of the tree
    rmtree(root)
    assert not root.exists() and outside.read_text() == "not ours"


def test_make_readonly_private(tmp_path: Path) -> None:
    root = tmp_path / "t"
    make_tree(root)
    make_readonly(root, world_readable=False)
    assert mode(root / "data.txt") == 0o400 and mode(root / "bin") == 0o500


def test_make_writable_gives_the_owner_the_folders(tmp_path: Path) -> None:
    root = tmp_path / "t"
    make_tree(root)
    make_readonly(root)
    make_writable(root)
    assert mode(root) & stat.S_IWUSR and mode(root / "bin") & stat.S_IWUSR
    assert mode(root / "data.txt") == 0o444  # files stay as they were


def test_rmtree_links_files_and_missing_paths(tmp_path: Path) -> None:
    target = tmp_path / "target"
    (target / "keep").mkdir(parents=True)
    link = tmp_path / "link"
    os.symlink(target, link)
    rmtree(link)  # removes the link, never what it points at
    assert not os.path.lexists(link) and (target / "keep").is_dir()
    f = tmp_path / "f"
    f.write_text("x")
    rmtree(f)
    assert not f.exists()
    rmtree(tmp_path / "never-was")  # no error


def test_check_can_create_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_can_create(tmp_path / "file" / "x" / "y", "the clone")
    check_can_create(tmp_path / "new" / "deeper")  # a missing folder under a writable one: fine


def test_lock_files_are_for_the_folders_writers(tmp_path: Path) -> None:
    assert lock_mode(tmp_path) == (0o660 if mode(tmp_path) & stat.S_IWGRP else 0o600)
    os.chmod(tmp_path, 0o775)
    assert lock_mode(tmp_path) == 0o660
    with file_lock(tmp_path / "locks" / "x.lock", timeout=0):
        assert mode(tmp_path / "locks" / "x.lock") == lock_mode(tmp_path / "locks")
        holder = (tmp_path / "locks" / "x.lock").read_text()
        assert holder.startswith(f"pid {os.getpid()},")


HOLD = """
import sys, time
from pathlib import Path
from sitestack.core.fsutil import file_lock
with file_lock(Path(sys.argv[1]), timeout=0):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_file_lock_refuses_while_another_process_holds_it(tmp_path: Path) -> None:
    lock = tmp_path / "a.lock"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        with pytest.raises(ConflictError, match=f"locked by pid {p.pid}") as e, \
                file_lock(lock, timeout=0, what="stack x"):
            pass
        assert e.value.exit_code == 5 and "stack x" in str(e.value)
        with pytest.raises(ConflictError), shared_lock(lock, timeout=0):
            pass  # a shared holder waits for an exclusive one too
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    with file_lock(lock, timeout=0):  # the holder is gone: so is its lock
        pass


def test_shared_locks_share_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    lock = tmp_path / "use.lock"
    with shared_lock(lock, timeout=0), shared_lock(lock, timeout=0), pytest.raises(ConflictError), \
            shared_lock(lock, exclusive=True, timeout=0):
        pass
    with shared_lock(lock, exclusive=True, timeout=0):
        pass
