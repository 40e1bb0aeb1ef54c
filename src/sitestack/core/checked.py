"""Which files of a published stack last matched their sha256, known by their stat data.

`pack` reads every file of a stack, and it checked each one's sha256 as well: 0.35 of the
5 CPU-s a small stack's pack took, work that `tar` does not do. Now a file whose inode and
ctime are those it had when its bytes last matched is not hashed again, as git trusts the
stat data in its index. A write, a truncate, a chmod, a new link or a utime each set the
ctime to the kernel's clock, and no system call sets it back. What a ctime cannot show (bit
rot on the disk, a write to the raw block device, a write through a shared mapping whose
page was made writable before the ctime was taken) is still caught where it matters: unpack
checks every byte it receives against the manifest the archive carries, and `sitestack
verify` hashes every file.

A hard link made or removed sets a new ctime too: a hardlink clone of an 8 GiB stack (`sitestack
clone`, `cp -al`) would make the next pack hash 8 GiB again. So a new ctime is also let
through where nothing but a link can have happened: the same inode, the same mtime to the
nanosecond, and another link count than when the bytes matched (the size is the manifest's,
checked by the caller either way). Each way bytes change under one inode sets the mtime:
write(2), truncate, fallocate, copy_file_range or a clone into it, a write through a
mapping (at its first fault), and each of these through another hard link of the file. Only
an explicit utime puts an mtime back, and setting one to a chosen time takes the file's
owner or root, who can write this state file too (it is the site's, beside its stacks): a
chmod, write, utime and chmod back, with the link count as it was, is still hashed and
refused; with a hard link left behind it is packed, and unpack refuses it, as it refuses
what a forged state file lets through. A link count back where it was (a clone made and
removed between two packs) looks like that tampering, and its files are hashed again.

One file per stack version in the site's state (never in the read-only stack):
ROOT/.sitestack/checked/NAME/VERSION, made for one manifest (the sha256 of its records
file is the key) on one device. It holds (inode, ctime in ns, mtime in ns, link count) for
each of the manifest's files in sorted order, zeros where nothing is known, as int64s:
loading 68,000 entries takes about a millisecond, where JSON took tens of milliseconds
before the first byte was packed.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from pathlib import Path

MAGIC = b"sitestack-checked 2\n"
# A file changed twice within one tick of the clock that stamps ctimes (a few ms) keeps
# the first change's ctime: files changed this close to the start of a check are not kept.
RACY_NS = 2_000_000_000
N = 4  # int64s per file: inode, ctime_ns, mtime_ns, link count (0: its mtime proves nothing)


class Checked:
    """What is known of the files of one manifest, in sorted order, to hold checked bytes;
    `confirm` notes what the running check proves (see `save`)."""

    def __init__(self, path: Path, key: str, count: int, dev: int = 0, old: array[int] | None = None) -> None:
        self.path, self.key, self.dev = path, key, dev
        self.old = old if old is not None and len(old) == N * count else array("q", bytes(8 * N * count))
        self.new = array("q", bytes(8 * N * count))
        self.new_dev = 0
        self.cutoff = 0  # set by start()

    @classmethod
    def load(cls, path: Path, key: str, count: int) -> Checked:
        """What `path` knows for the manifest `key` of `count` files; nothing if it is missing,
        torn, of another format, or made for another manifest."""
        old, dev = None, 0
        with contextlib.suppress(OSError, ValueError):
            with open(path, "rb") as f:
                data = f.read()
            head = MAGIC + key.encode() + b"\n"
            if data.startswith(head) and len(data) == len(head) + 8 + 8 * N * count:
                old = array("q")
                old.frombytes(data[len(head):])
                dev, old = old[0], old[1:]
        return cls(path, key, count, dev, old)

    def start(self, now_ns: int) -> None:
        """The check starts now: what changed since `now_ns - RACY_NS` is never kept."""
        self.cutoff = now_ns - RACY_NS

    def trusted(self, i: int, st: os.stat_result) -> bool:
        """True if file `i` is the inode whose bytes matched last time, with the ctime it had
        then, or with a new ctime that only a link made or removed can explain (the module's
        docstring): the same mtime, another link count. The caller checks the size."""
        old, o = self.old, N * i
        if old[o + 1] == 0 or old[o] != st.st_ino or st.st_dev != self.dev:
            return False
        if old[o + 1] == st.st_ctime_ns:
            return True
        return old[o + 3] != 0 and old[o + 2] == st.st_mtime_ns and old[o + 3] != st.st_nlink

    def confirm(self, i: int, st: os.stat_result, trusted: bool = False) -> None:
        """File `i`, as `st` (taken before its bytes were read) describes it, is being checked,
        or was `trusted`: kept only if the whole check then succeeds (`save`). A stat changed
        too recently is not kept; a trusted file then keeps what vouched for it."""
        if self.new_dev and st.st_dev != self.new_dev:
            return
        o = N * i
        if st.st_ctime_ns < self.cutoff:
            self.new_dev = st.st_dev
            # An mtime in the racy window (or the future) proves nothing: ctime rule only.
            nlink = st.st_nlink if st.st_mtime_ns < self.cutoff else 0
            new = self.new
            new[o], new[o + 1], new[o + 2], new[o + 3] = st.st_ino, st.st_ctime_ns, st.st_mtime_ns, nlink
        elif trusted and st.st_dev == self.dev:
            self.new_dev = st.st_dev
            self.new[o : o + N] = self.old[o : o + N]

    def save(self) -> bool:
        """After a check in which every file matched: keep what it confirmed, if that differs
        from what was known and the site's state is writable by this user (a user's pack of a
        stack only reads it). A temp file renamed over the old one: a reader sees either,
        and concurrent checks need no lock, as every version of the file is true."""
        if self.new == self.old and self.new_dev == self.dev:
            return False
        from sitestack.core.fsutil import atomic_write_bytes

        data = MAGIC + self.key.encode() + b"\n" + array("q", [self.new_dev]).tobytes() + self.new.tobytes()
        try:
            # No fsync: a file torn by a power cut is refused by load's length check.
            atomic_write_bytes(self.path, data, durable=False)
        except OSError:  # not this user's state, or a full disk: the next pack hashes again
            return False
        return True
