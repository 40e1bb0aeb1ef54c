"""core/checked.py: which files last matched their sha256, by inode and ctime."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sitestack.core.checked import RACY_NS, Checked


def _files(tmp_path: Path, n: int = 3) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x" * i)
        out.append(p)
    return out


def _confirmed(state: Path, files: list[Path], key: str = "k" * 64) -> Checked:
    """A check of `files` that started well after they were written (no racy ones), saved."""
    c = Checked.load(state, key, len(files))
    c.start(time.time_ns() + RACY_NS + 10**9)
    for i, p in enumerate(files):
        c.confirm(i, os.lstat(p))
    assert c.save()
    return c


def test_what_a_check_confirmed_is_trusted_next_time(tmp_path: Path) -> None:
    files = _files(tmp_path)
    state = tmp_path / "state" / "NAME" / "1"
    assert not any(Checked.load(state, "k" * 64, 3).trusted(i, os.lstat(p)) for i, p in enumerate(files))
    _confirmed(state, files)
    again = Checked.load(state, "k" * 64, 3)
    assert all(again.trusted(i, os.lstat(p)) for i, p in enumerate(files))
    assert not again.trusted(1, os.lstat(files[0])), "trusted for another file's inode"


def test_a_chmod_utime_or_write_ends_the_trust(tmp_path: Path) -> None:
    files = _files(tmp_path)
    state = tmp_path / "state"
    _confirmed(state, files)
    st = os.lstat(files[1])
    files[1].write_bytes(b"y")  # same size, other bytes
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime back
    os.chmod(files[2], 0o600)
    c = Checked.load(state, "k" * 64, 3)
    assert [c.trusted(i, os.lstat(p)) for i, p in enumerate(files)] == [True, False, False]


def test_another_manifest_count_or_a_torn_file_trusts_nothing(tmp_path: Path) -> None:
    files = _files(tmp_path)
    state = tmp_path / "state"
    _confirmed(state, files)
    assert not Checked.load(state, "j" * 64, 3).trusted(0, os.lstat(files[0]))
    assert not Checked.load(state, "k" * 64, 4).trusted(0, os.lstat(files[0]))
    state.write_bytes(state.read_bytes()[:-3])
    assert not Checked.load(state, "k" * 64, 3).trusted(0, os.lstat(files[0]))


def test_a_file_changed_just_before_the_check_is_not_kept(tmp_path: Path) -> None:
    files = _files(tmp_path)
    state = tmp_path / "state"
    c = Checked.load(state, "k" * 64, 3)
    c.start(time.time_ns())  # the files were written within RACY_NS of it
    for i, p in enumerate(files):
        c.confirm(i, os.lstat(p))
    assert not c.save() and not state.exists()


def test_a_state_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    files = _files(tmp_path)
    (tmp_path / "file").write_text("")
    c = Checked.load(tmp_path / "file" / "NAME" / "1", "k" * 64, 3)  # its folder is a file
    c.start(time.time_ns() + RACY_NS + 10**9)
    for i, p in enumerate(files):
        c.confirm(i, os.lstat(p))
    assert c.save() is False
