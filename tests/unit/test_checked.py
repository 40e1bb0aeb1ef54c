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


def test_a_hard_link_made_or_removed_since_keeps_the_trust(tmp_path: Path) -> None:
    """A hardlink clone (`cp -al`, `sitestack clone`) gives every file a new ctime and a link
    more, and its removal a new ctime and a link less: nothing but a link can explain that
    with the mtime unchanged. A clone made and removed between two checks leaves the link
    count where it was, as a chmod, write, utime and chmod back would: hashed again."""
    files = _files(tmp_path)
    state = tmp_path / "state"
    _confirmed(state, files)
    time.sleep(0.05)  # changes in a later tick of the file clock than the check's stat
    clone = tmp_path / "clone"
    clone.mkdir()
    for p in files:
        os.link(p, clone / p.name)
    c = Checked.load(state, "k" * 64, 3)
    assert all(os.lstat(p).st_ctime_ns != c.old[4 * i + 1] for i, p in enumerate(files))
    assert all(c.trusted(i, os.lstat(p)) for i, p in enumerate(files))
    _confirmed(state, files)  # a check with the clone there keeps its ctimes and link counts
    time.sleep(0.05)  # the removal's ctime in a later tick of the file clock (RACY_NS, in a pack)
    for p in files:
        (clone / p.name).unlink()
    c = Checked.load(state, "k" * 64, 3)
    assert all(c.trusted(i, os.lstat(p)) for i, p in enumerate(files))
    _confirmed(state, files)
    time.sleep(0.05)
    for p in files:  # made and removed between two checks
        os.link(p, clone / p.name)
        (clone / p.name).unlink()
    c = Checked.load(state, "k" * 64, 3)
    assert not any(c.trusted(i, os.lstat(p)) for i, p in enumerate(files))


def test_every_write_through_a_hard_link_ends_the_trust(tmp_path: Path) -> None:
    """write(2), truncate and a shared mapping, each through a link made since the check:
    the link count changed, and so did the mtime, which is what refuses them."""
    import mmap

    files = _files(tmp_path, 4)
    state = tmp_path / "state"
    _confirmed(state, files)
    time.sleep(0.05)
    links = []
    for p in files[1:]:
        links.append(tmp_path / f"{p.name}.link")
        os.link(p, links[-1])
    links[0].write_bytes(b"z")  # same size
    with open(links[1], "r+b") as f:
        f.truncate(0)
        f.write(b"zz")
    fd = os.open(links[2], os.O_RDWR)
    with mmap.mmap(fd, 3) as m:
        m[0:1] = b"z"
    os.close(fd)
    c = Checked.load(state, "k" * 64, 4)
    assert [c.trusted(i, os.lstat(p)) for i, p in enumerate(files)] == [True, False, False, False]


def test_a_write_with_its_mtime_put_back_is_refused_unless_a_link_count_changed(tmp_path: Path) -> None:
    """Only the file's owner or root can put an mtime back (and they can write the state file
    too): with the link count as it was it is refused; with a link left behind it is the one
    change the rule lets through, which unpack then refuses (tests/test_pack_checked.py)."""
    files = _files(tmp_path, 2)
    state = tmp_path / "state"
    _confirmed(state, files)
    time.sleep(0.05)
    for i, p in enumerate(files):
        st = os.lstat(p)
        if i:
            os.link(p, tmp_path / "kept")
        p.write_bytes(b"y" * i)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    c = Checked.load(state, "k" * 64, 2)
    assert [c.trusted(i, os.lstat(p)) for i, p in enumerate(files)] == [False, True]


def test_a_link_just_before_the_check_keeps_what_vouched_for_the_file(tmp_path: Path) -> None:
    """A clone removed (or made) moments before a check: its ctimes are too new to keep, so
    what trusted the file stays, and the check after it trusts it again."""
    files = _files(tmp_path)
    state = tmp_path / "state"
    _confirmed(state, files)
    for p in files:
        os.link(p, tmp_path / f"{p.name}.link")
    c = Checked.load(state, "k" * 64, 3)
    c.start(time.time_ns())  # the links are within RACY_NS of it
    for i, p in enumerate(files):
        st = os.lstat(p)
        c.confirm(i, st, c.trusted(i, st))
    assert not c.save() and c.new == c.old  # nothing new to keep: the old entries stand
    again = Checked.load(state, "k" * 64, 3)
    assert all(again.trusted(i, os.lstat(p)) for i, p in enumerate(files))


def test_an_mtime_too_new_or_in_the_future_proves_nothing(tmp_path: Path) -> None:
    files = _files(tmp_path, 1)
    st = os.lstat(files[0])
    os.utime(files[0], ns=(st.st_atime_ns, time.time_ns() + 10**15))
    state = tmp_path / "state"
    c = Checked.load(state, "k" * 64, 1)
    c.start(time.time_ns() + RACY_NS + 10**9)
    c.confirm(0, os.lstat(files[0]))
    assert c.save()
    time.sleep(0.05)
    os.link(files[0], tmp_path / "link")
    assert not Checked.load(state, "k" * 64, 1).trusted(0, os.lstat(files[0]))


def test_a_state_of_the_older_format_trusts_nothing(tmp_path: Path) -> None:
    from array import array

    files = _files(tmp_path, 2)
    state = tmp_path / "state"
    key = "k" * 64
    old = array("q", [os.lstat(files[0]).st_dev])
    for p in files:
        old.extend((os.lstat(p).st_ino, os.lstat(p).st_ctime_ns))
    state.write_bytes(b"sitestack-checked 1\n" + key.encode() + b"\n" + old.tobytes())
    assert not any(Checked.load(state, key, 2).trusted(i, os.lstat(p)) for i, p in enumerate(files))
