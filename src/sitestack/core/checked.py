"""Which files of a published stack last matched their sha256, known by inode and ctime.

`pack` reads every file of a stack, and it checked each one's sha256 as well: 0.35 of the
5 CPU-s a small stack's pack took, work that `tar` does not do. Now a file whose inode and
ctime are those it had when its bytes last matched is not hashed again, as git trusts the
stat data in its index. A write, a truncate, a chmod, a new link or a utime each set the
ctime to the kernel's clock, and no system call sets it back. What a ctime cannot show (bit
rot on the disk, a write to the raw block device) is still caught where it matters: unpack
checks every byte it receives against the manifest the archive carries, and `sitestack
verify` hashes every file.

One file per stack version in the site's state (never in the read-only stack):
ROOT/.sitestack/checked/NAME/VERSION, made for one manifest (the sha256 of its records
file is the key) on one device. It holds (inode, ctime in ns) for each of the manifest's
files in sorted order, (0, 0) where nothing is known, as int64s: loading 68,000 entries
takes microseconds, where JSON took tens of milliseconds before the first byte was packed.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from pathlib import Path

MAGIC = b"sitestack-checked 1\n"
# A file changed twice within one tick of the clock that stamps ctimes (a few ms) keeps
# the first change's ctime: files changed this close to the start of a check are not kept.
RACY_NS = 2_000_000_000


class Checked:
    """The (inode, ctime) pairs known to hold checked bytes, for the files of one manifest
    in sorted order; `confirm` notes the pairs the running check proves (see `save`)."""

    def __init__(self, path: Path, key: str, count: int, dev: int = 0, old: array[int] | None = None) -> None:
        self.path, self.key, self.dev = path, key, dev
        self.old = old if old is not None and len(old) == 2 * count else array("q", bytes(16 * count))
        self.new = array("q", bytes(16 * count))
        self.new_dev = 0
        self.cutoff = 0  # set by start()

    @classmethod
    def load(cls, path: Path, key: str, count: int) -> Checked:
        """What `path` knows for the manifest `key` of `count` files; nothing if it is missing,
        torn, or made for another manifest."""
        old, dev = None, 0
        with contextlib.suppress(OSError, ValueError):
            with open(path, "rb") as f:
                data = f.read()
            head = MAGIC + key.encode() + b"\n"
            if data.startswith(head) and len(data) == len(head) + 8 + 16 * count:
                old = array("q")
                old.frombytes(data[len(head):])
                dev, old = old[0], old[1:]
        return cls(path, key, count, dev, old)

    def start(self, now_ns: int) -> None:
        """The check starts now: what changed since `now_ns - RACY_NS` is never kept."""
        self.cutoff = now_ns - RACY_NS

    def trusted(self, i: int, st: os.stat_result) -> bool:
        """True if file `i` is the inode, with the ctime, whose bytes matched last time."""
        old = self.old
        return (old[2 * i + 1] != 0 and old[2 * i] == st.st_ino and old[2 * i + 1] == st.st_ctime_ns
                and st.st_dev == self.dev)

    def confirm(self, i: int, st: os.stat_result) -> None:
        """File `i`, as `st` (taken before its bytes were read) describes it, is being checked:
        kept only if the whole check then succeeds (`save`)."""
        if st.st_ctime_ns < self.cutoff and (not self.new_dev or st.st_dev == self.new_dev):
            self.new_dev = st.st_dev
            self.new[2 * i], self.new[2 * i + 1] = st.st_ino, st.st_ctime_ns

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
