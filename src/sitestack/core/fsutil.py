"""Small filesystem helpers: atomic writes, locks, read-only trees, forced removal."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sitestack.errors import ConflictError

WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it.

    A reader sees the old content or the new one, never a torn file, even after kill -9.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: Path, data: Any, mode: int = 0o644) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode)


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float = -1, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock file. timeout=-1 waits; 0 refuses at once."""
    from filelock import FileLock, Timeout  # lazy: keeps CLI start-up fast

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise ConflictError(
            f"{what or path} is locked by another sitestack command ({path})"
        ) from None
    try:
        yield
    finally:
        lock.release()


def make_readonly(root: Path, *, world_readable: bool = True) -> None:
    """Strip every write bit from a tree, bottom-up; optionally make it readable by all.

    world_readable adds r (and x on folders and executables), so a root umask of 077
    cannot leave a published stack unreadable to users.
    """

    def fix(p: str, is_dir: bool) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(st.st_mode) & ~WRITE_BITS
        if world_readable:
            mode |= 0o444
            if is_dir or mode & stat.S_IXUSR:
                mode |= 0o111
        os.chmod(p, mode)

    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fix(os.path.join(dirpath, name), False)
        for name in dirnames:
            fix(os.path.join(dirpath, name), True)
    fix(str(root), True)


def make_writable(root: Path) -> None:
    """Give the owner write access to every folder (enough to delete the tree)."""
    root = Path(root)
    if not root.exists():
        return
    for dirpath, _dirnames, _files in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, stat.S_IMODE(os.lstat(dirpath).st_mode) | stat.S_IWUSR | stat.S_IXUSR)


def rmtree(path: Path) -> None:
    """Remove a tree even if it was made read-only."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return

    def onerror(func: Any, p: str, exc: BaseException) -> None:
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IWUSR | stat.S_IXUSR)
        with contextlib.suppress(OSError):
            os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | stat.S_IWUSR | stat.S_IXUSR)
        func(p)

    make_writable(path)
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=onerror)
    else:
        shutil.rmtree(path, onerror=lambda f, p, e: onerror(f, p, e[1]))


def is_writable_dir(path: Path) -> bool:
    """True if we could create files in `path` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


@contextlib.contextmanager
def shared_lock(path: Path, *, exclusive: bool = False, what: str = "") -> Iterator[None]:
    """flock(2) on `path`: many holders share it, an exclusive holder waits for all of them.

    Builds hold the package cache's use-lock shared while they link from it; `gc` holds it
    exclusive, so it never removes an entry a build has chosen but not yet linked.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError as e:
            raise ConflictError(f"cannot lock {what or path}: {e.strerror}") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


CRASH_ENV = "SITESTACK_TEST_CRASH_AT"


def crash_point(where: str) -> None:
    """Tests of crash safety set SITESTACK_TEST_CRASH_AT=WHERE: the process kill -9s itself here."""
    if os.environ.get(CRASH_ENV) == where:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
