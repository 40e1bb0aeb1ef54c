"""core.copytree on temp trees: the walk, each engine's file, probes, whole-tree clones."""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from sitestack.core.copytree import (
    BATCH,
    Tree,
    clone_files,
    clone_tree,
    copy_file,
    hardlink_file,
    probe,
    scan_tree,
)


def make_src(root: Path, n: int = 3) -> None:
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "bin").mkdir()
    for i in range(n):
        (root / "lib" / "pkg" / f"m{i}.py").write_text(f"x = {i}\n")
    tool = root / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o4755)  # setuid: a clone must never carry it
    os.utime(tool, ns=(1_000_000_000, 1_500_000_000_123))
    os.symlink("../lib", root / "bin" / "lib-link")
    os.symlink("/nonexistent/target", root / "dangling")


def test_scan_tree_lists_parents_first_and_never_follows_links(tmp_path: Path) -> None:
    make_src(tmp_path)
    t = scan_tree(tmp_path)
    assert t.dirs == ("bin", "lib", "lib/pkg")
    assert dict(t.files) == {"bin/tool": 10, "lib/pkg/m0.py": 6, "lib/pkg/m1.py": 6, "lib/pkg/m2.py": 6}
    assert dict(t.links) == {"bin/lib-link": "../lib", "dangling": "/nonexistent/target"}
    assert t.bytes == 28
    w = t.without(["lib"])
    assert w.dirs == ("bin",) and {f for f, _ in w.files} == {"bin/tool"} and dict(w.links) == dict(t.links)


def test_scan_tree_prune_neither_lists_nor_enters_a_folder(tmp_path: Path) -> None:
    make_src(tmp_path)
    (tmp_path / "lib" / "pkg" / "sub").mkdir()
    seen: list[str] = []
    t = scan_tree(tmp_path, prune=lambda rel: seen.append(rel) or rel == "lib/pkg")
    assert t.dirs == ("bin", "lib") and {f for f, _ in t.files} == {"bin/tool"}
    assert sorted(seen) == ["bin", "lib", "lib/pkg"]  # lib/pkg/sub was never reached


def test_copy_file_is_a_new_inode_with_mode_and_mtime(tmp_path: Path) -> None:
    make_src(tmp_path / "s")
    src, dst = tmp_path / "s" / "bin" / "tool", tmp_path / "copy"
    copy_file(str(src), str(dst))
    s, d = src.stat(), dst.stat()
    assert d.st_ino != s.st_ino and dst.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(d.st_mode) == 0o755  # setuid dropped, the owner's rw kept
    assert d.st_mtime_ns == s.st_mtime_ns  # so a copied .pyc stays valid
    with pytest.raises(FileExistsError):
        copy_file(str(src), str(dst))  # never over an existing file


def test_copy_gives_the_owner_write_on_a_read_only_source(tmp_path: Path) -> None:
    src = tmp_path / "ro.txt"
    src.write_text("r")
    os.chmod(src, 0o444)
    copy_file(str(src), str(tmp_path / "c"))
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o644


def test_hardlink_shares_the_inode(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    hardlink_file(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "a").stat().st_ino == (tmp_path / "b").stat().st_ino


def test_probes_say_why_an_engine_cannot_work(tmp_path: Path) -> None:
    (tmp_path / "src").write_text("x")
    assert probe("copy", tmp_path / "src", tmp_path) is None
    assert probe("hardlink", tmp_path / "src", tmp_path) is None
    assert not (tmp_path / ".sitestack-probe").exists()  # the probe cleans up after itself
    why = probe("reflink", tmp_path / "src", tmp_path)
    assert why is None or "copy-on-write" in why  # ext4: no FICLONE; btrfs/xfs: works
    if os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev:
        with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
            assert probe("hardlink", tmp_path / "src", Path(other)) == \
                "the clone and the stack are on different filesystems"


@pytest.mark.parametrize("mode", ["copy", "hardlink", "thin"])
def test_clone_files_counts_what_is_shared(tmp_path: Path, mode: str) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make_src(src)
    t = scan_tree(src)
    for d in t.dirs:
        (dst / d).mkdir(parents=True, exist_ok=True)
    c = clone_files(src, dst, t.files, mode, jobs=2)
    assert c.bytes == t.bytes and c.fallbacks == 0
    assert (c.shared, c.copied) == ((0, 4) if mode == "copy" else (4, 0))
    got = dst / "lib" / "pkg" / "m1.py"
    assert got.read_text() == "x = 1\n"
    same = got.stat().st_ino == (src / "lib" / "pkg" / "m1.py").stat().st_ino
    assert same == (mode != "copy")
    assert got.is_symlink() == (mode == "thin")


def test_clone_tree_makes_folders_while_the_pool_links(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make_src(src, n=3 * BATCH)  # several pool batches
    dst.mkdir()
    t = scan_tree(src)
    ready = threading.Event()
    c = clone_tree(src, dst, t.dirs, t.files, "hardlink", jobs=2, on_ready=ready.set, ready_after=1)
    assert ready.is_set() and c.shared == len(t.files) and c.copied == 0
    assert set(scan_tree(dst).files) == set(t.files)
    assert scan_tree(dst).dirs == t.dirs


def test_clone_tree_fails_on_a_file_outside_the_plan_and_reraises_on_ready(tmp_path: Path) -> None:
    src = tmp_path / "s"
    make_src(src)
    t = scan_tree(src)
    (tmp_path / "d1").mkdir()
    with pytest.raises(FileNotFoundError):
        clone_tree(src, tmp_path / "d1", ("bin",), t.files, "copy", jobs=2)

    def boom() -> None:
        raise RuntimeError("relocation failed")

    (tmp_path / "d2").mkdir()
    with pytest.raises(RuntimeError, match="relocation failed"):
        clone_tree(src, tmp_path / "d2", t.dirs, t.files, "copy", jobs=2, on_ready=boom)


def test_tree_is_frozen() -> None:
    t = Tree((), (), ())
    with pytest.raises(AttributeError):
        t.dirs = ("x",)
