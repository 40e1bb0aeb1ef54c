"""Small filesystem helpers: atomic writes, locks, read-only trees, forced removal."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.errors import ConflictError, UsageError

if TYPE_CHECKING:
    from typing import Any

WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def temp_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=parent): a new file of mode
    0600 beside `path`, opened for writing, without importing tempfile (and random): the
    start-up of `sitestack venv` and `clone` is benchmarked."""
    while True:
        tmp = f"{path.parent}/.{path.name}.{os.urandom(6).hex()}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it.

    A reader sees the old content or the new one, never a torn file, even after kill -9.
    `durable=False` skips the fsync, for a cache whose loss after a power cut costs nothing
    but its rebuilding (its reader must take a torn or empty file as no cache).
    """
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = temp_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
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


LOCK_TIMEOUT_ENV = "SITESTACK_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 600.0  # seconds; a wait never lasts forever


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """mkdir -p with an exact mode on every folder it creates, whatever the umask."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            continue  # another process made it: its mode is its maker's business
        os.chmod(p, mode)


def lock_mode(folder: Path) -> int:
    """Lock files are for those who may write the folder that holds them, nobody else.

    flock(2) works on any open descriptor, even a read-only one: a lock file anyone can
    read is a lock anyone can hold, and so stall every writer. 0600, or 0660 where the
    folder is group-writable (a staff group shares the site)."""
    try:
        group = os.stat(folder).st_mode & stat.S_IWGRP
    except OSError:
        group = 0
    return 0o660 if group else 0o600


def open_lock(path: Path, what: str = "") -> int:
    """Open (or create) a lock file, with lock_mode; ConflictError if this user may not."""
    path = Path(path)
    try:
        make_dirs(path.parent)
        mode = lock_mode(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except PermissionError:
        raise ConflictError(f"cannot lock {what or path}: {path.parent} is not writable by "
                            "this user (only the site's writers may change it)") from None
    except OSError as e:
        raise ConflictError(f"cannot lock {what or path}: {e.strerror} ({e.filename or path})") from None
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)  # older sitestack made them 0644: anyone could hold those
    except OSError:
        pass
    return fd


def _holder(fd: int) -> str:
    """Who holds the lock on `fd`'s file: what the holder recorded, checked against the
    kernel's own list (/proc/locks), which also names holders that record nothing (a
    `flock` command, a shared holder whose record another one overwrote)."""
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pids = _lock_pids(fd)
    if text and (not pids or any(text.startswith(f"pid {p},") for p in pids)):
        return text
    if pids:
        return ", ".join(_describe_pid(p) for p in pids[:3]) + (" and others" if len(pids) > 3 else "")
    return text or "an unknown process (no sitestack holder recorded)"


def _lock_pids(fd: int) -> list[int]:
    """Pids /proc/locks names for flocks on `fd`'s inode (holders first, not waiters)."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    want = f":{st.st_ino}"
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}{want}"
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters have "->" in front
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == dev and fields[4].isdigit():
            pid = int(fields[4])
            if pid > 0 and pid != os.getpid() and pid not in pids:
                pids.append(pid)
    return pids


def _describe_pid(pid: int) -> str:
    import pwd

    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        user = pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        user = "?"
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            comm = f.read().strip()
    except OSError:
        comm = "?"
    return f"pid {pid} ({comm}), user {user}"


def lock_timeout(timeout: float | None) -> float:
    """None or negative: $SITESTACK_LOCK_TIMEOUT, else DEFAULT_LOCK_TIMEOUT seconds."""
    if timeout is not None and timeout >= 0:
        return timeout
    try:
        return max(0.0, float(os.environ.get(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT)))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float | None = None, what: str = "") -> Iterator[None]:
    """Hold an exclusive flock on a lock file that only the folder's writers can open.

    timeout: seconds to wait (0 refuses at once; None or negative: $SITESTACK_LOCK_TIMEOUT,
    else 600). The holder writes "pid user@host since" into the file, so a waiter, and the
    error when it gives up, name who holds it. The kernel drops a flock when its process dies:
    no lock outlives a kill -9.
    """
    fd = open_lock(Path(path), what)
    try:
        _acquire(fd, Path(path), exclusive=True, timeout=timeout, what=what)
        _record_holder(fd)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _acquire(fd: int, path: Path, *, exclusive: bool, timeout: float | None, what: str) -> None:
    """flock(2) without blocking, retried until `timeout` (see file_lock); then ConflictError
    (exit 5) naming the holder. A wait of more than a second says so on stderr, once."""
    import fcntl
    import time

    op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    limit = lock_timeout(timeout)
    t0, told = time.monotonic(), False
    while True:
        try:
            fcntl.flock(fd, op)
            return
        except BlockingIOError:
            pass
        except OSError as e:
            raise ConflictError(f"cannot lock {what or path}: {e.strerror}") from None
        waited = time.monotonic() - t0
        if waited >= limit:
            raise ConflictError(
                f"{what or path} is locked by {_holder(fd)} ({path}); gave up after "
                f"{waited:.1f}s", hint=f"wait for that command to finish, or set "
                f"{LOCK_TIMEOUT_ENV}=SECONDS to wait longer")
        if not told and waited >= 1:
            print(f"sitestack: waiting for {what or path}, held by {_holder(fd)}",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(0.05 if waited < 1 else 0.25)


def _record_holder(fd: int) -> None:
    import getpass
    import socket
    import time

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (a container's uid): the number will do
        user = str(os.geteuid())
    text = f"pid {os.getpid()}, user {user} on host {socket.gethostname()}, since " \
           f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n"
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)


def readonly_mode(mode: int, is_dir: bool = False, world_readable: bool = True) -> int:
    """The permission bits make_readonly gives a file or folder of `mode` (its st_mode)."""
    mode = stat.S_IMODE(mode) & ~WRITE_BITS
    if world_readable:
        mode |= 0o444
        if is_dir or mode & stat.S_IXUSR:
            mode |= 0o111
    return mode


def make_readonly(root: Path, *, world_readable: bool = True) -> None:
    """Strip every write bit from a tree, bottom-up; optionally make it readable by all.

    world_readable adds r (and x on folders and executables), so a root umask of 077
    cannot leave a published stack unreadable to users.
    """

    def fix(p: str, is_dir: bool) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return
        mode = readonly_mode(st.st_mode, is_dir, world_readable)
        # Files linked from the site cache are read-only already: a chmod to the same mode
        # would still write their inode (its ctime) to the journal, 12,000 times for a stack.
        if mode != stat.S_IMODE(st.st_mode):
            os.chmod(p, mode)

    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fix(os.path.join(dirpath, name), False)
        for name in dirnames:
            fix(os.path.join(dirpath, name), True)
    fix(str(root), True)


def make_readonly_from(root: Path, modes: dict[str, int]) -> None:
    """make_readonly for the files and folders below `root` whose st_mode a walk just took
    ({rel: st_mode}, nothing written since): the chmods without a second walk of 70,000
    entries. What the walk did not see (the root itself, a folder skipped) is the caller's."""
    base = str(root)
    for rel, mode in modes.items():
        want = readonly_mode(mode, stat.S_ISDIR(mode))
        if want != stat.S_IMODE(mode) and not stat.S_ISLNK(mode):
            os.chmod(f"{base}/{rel}", want)


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
    import shutil

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
def shared_lock(path: Path, *, exclusive: bool = False, timeout: float | None = None,
                what: str = "") -> Iterator[None]:
    """flock(2) on `path`: many holders share it, an exclusive holder waits for all of them.

    Builds hold the package cache's use-lock shared while they link from it; `gc` holds it
    exclusive, so it never removes an entry a build has chosen but not yet linked. The wait
    is bounded like file_lock's ($SITESTACK_LOCK_TIMEOUT), and the error names the holder.
    """
    fd = open_lock(Path(path), what)  # only the site's writers can open it (see lock_mode)
    try:
        _acquire(fd, Path(path), exclusive=exclusive, timeout=timeout, what=what)
        _record_holder(fd)  # shared holders overwrite each other: _holder asks the kernel too
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


CRASH_ENV = "SITESTACK_TEST_CRASH_AT"


def crash_point(where: str) -> None:
    """Tests of crash safety set SITESTACK_TEST_CRASH_AT=WHERE: the process kill -9s itself here."""
    if os.environ.get(CRASH_ENV) == where:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def check_can_create(path: Path, what: str = "") -> None:
    """Refuse up front, in one line, a path this user cannot create: a file in the way
    (UsageError, exit 2) or a folder it may not write (ConflictError, exit 5)."""
    path = Path(path)
    p = path.parent
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    if not p.is_dir():
        raise UsageError(f"cannot make {what or path}: {p} is a file, not a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConflictError(f"cannot make {what or path}: {p} is not writable by this user")
