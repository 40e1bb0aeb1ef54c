"""Build in a temp folder, then rename into place: the one way sitestack publishes a tree.

A temp folder sits in a folder on the same filesystem as its destination (so the final
step is one rename) and is named ``PREFIX<host>-<pid>-<random>``: a later run tells the
temp of a killed run (same host, pid gone) from one still being built. Callers that hold
the lock every writer of such temps holds pass ``locked=True``: then every matching temp is
garbage (also one of another host, or from before names carried owners), except one whose
owner is alive on this host: a prefix such as ``py-`` also matches another stack's
``py-ml-...``, built under another lock.

``publish`` never overwrites an existing version; ``replace=True`` swaps a new tree in for
an old one (one ``renameat2(RENAME_EXCHANGE)`` where the kernel has it) and the old tree
ends up in the temp's path, which the ``temp_tree`` block removes on the way out.

This module is imported by `sitestack venv`: it imports nothing beyond os (no tempfile,
no socket, ctypes only when swapping).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

HOST = os.uname().nodename.replace("-", "_")  # '-' separates the name's fields


def temp_name(prefix: str) -> str:
    return f"{prefix}{HOST}-{os.getpid()}-{os.urandom(4).hex()}"


def make_temp(parent: Path, prefix: str, mode: int | None = 0o755) -> Path:
    """Create ``parent/PREFIX<host>-<pid>-<random>``; `mode` exactly, or the umask's if None."""
    while True:
        tmp = Path(parent) / temp_name(prefix)
        try:
            os.mkdir(tmp, 0o777 if mode is None else 0o700)
        except FileExistsError:
            continue
        if mode is not None:
            os.chmod(tmp, mode)  # exact: a site stack is for everyone, whatever the umask
        return tmp


def owner(name: str, prefix: str) -> tuple[str, int] | None:
    """(host, pid) from a temp's name, or None when the name has no such fields.

    Read from the right: the part after `prefix` may hold more fields (a build's version).
    """
    fields = name[len(prefix):].split("-")
    if len(fields) < 3 or not fields[-2].isdigit():
        return None
    return fields[-3], int(fields[-2])


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def clear_stale(parent: Path, prefix: str, *, locked: bool = False) -> list[Path]:
    """Remove temps of killed runs in `parent` whose names start with `prefix`.

    Unlocked, only temps of this host whose process is gone: those of live processes and of
    other hosts (a shared home) stay. `locked` removes every match but those of live
    processes on this host.
    """
    removed = []
    try:
        entries = [e.name for e in os.scandir(parent) if e.name.startswith(prefix)]
    except FileNotFoundError:
        return []
    for name in entries:
        who = owner(name, prefix)
        live = who is not None and who[0] == HOST and pid_alive(who[1])
        dead = who is not None and who[0] == HOST and not live
        if live or not (locked or dead):
            continue
        path = Path(parent) / name
        with contextlib.suppress(FileNotFoundError):  # another run cleared it first
            _rmtree(path)
        removed.append(path)
    return removed


@contextlib.contextmanager
def temp_tree(parent: Path, prefix: str, *, mode: int | None = 0o755, locked: bool = False
              ) -> Iterator[Path]:
    """Clear stale temps, make a new one, yield it; whatever is left at its path at the end
    (a failed build, or the old tree a swap put there) is removed."""
    clear_stale(parent, prefix, locked=locked)
    tmp = make_temp(parent, prefix, mode)
    try:
        yield tmp
    finally:
        if os.path.lexists(tmp):
            _rmtree(tmp)


def _rmtree(path: Path) -> None:
    from sitestack.core.fsutil import rmtree  # lazy: fsutil imports tempfile and shutil

    rmtree(path)


def publish(tmp: Path, dest: Path, *, replace: bool = False, allow_empty: bool = False,
            durable: bool = False) -> None:
    """Rename the finished tree `tmp` to `dest`.

    Without `replace`, FileExistsError if `dest` exists (`allow_empty`: an empty folder may be
    taken over); a non-empty folder is never overwritten, the kernel refuses that too. With
    `replace`, an existing `dest` is swapped out and left at `tmp`. `durable` fsyncs the
    parent folder, so the new name survives a crash.
    """
    if os.path.lexists(dest) and not (allow_empty and _empty_dir(dest)):
        if not replace:
            raise FileExistsError(errno.EEXIST, "already exists", str(dest))
        swap(tmp, dest)
    else:
        os.rename(tmp, dest)
    if durable:
        fd = os.open(Path(dest).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _empty_dir(p: Path) -> bool:
    return os.path.isdir(p) and not os.path.islink(p) and not os.listdir(p)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2). False where the kernel or fs can't."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap(new: Path, final: Path) -> None:
    """After this, `final` is the new tree and `new` holds the old one.

    Without RENAME_EXCHANGE: the old tree goes aside, the new one in; if that fails the old
    one comes back, so `final` is never left missing by an error.
    """
    if exchange(new, final):
        return
    aside = Path(final).with_name(temp_name(f".{Path(final).name}.old-"))
    os.rename(final, aside)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(aside, final)
        raise
    os.rename(aside, new)
