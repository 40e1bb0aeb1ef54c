"""Copy engines for clones: reflink (FICLONE), hardlink, kernel copy, symlink (thin).

Every engine works file by file on a plan made by one scandir walk, in a thread pool:
the work is system calls (link, ioctl, copy_file_range), which release the GIL, so
threads overlap metadata latency even on few cores. Copies keep mtimes (so .pyc files
stay valid) and get the owner's write bit (a clone is writable); hardlinks keep the
stack's inode untouched (chmod on it would change the stack).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

FICLONE = 0x40049409  # _IOW(0x94, 9, int): share all extents of one file with another
MODES = ("auto", "reflink", "hardlink", "copy", "thin")
BATCH = 64  # files per pool task: enough to amortise the pool's own overhead

# Errors after which a link/reflink of one file is retried as a plain copy.
_FALLBACK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.EOPNOTSUPP,
                    errno.EINVAL, errno.ENOTTY, errno.ENOSYS}

Progress = Callable[[int, int], None]  # (files done, bytes done) since the last call


@dataclass(frozen=True)
class Entry:
    rel: str
    size: int
    mode: int
    atime_ns: int
    mtime_ns: int


@dataclass(frozen=True)
class Tree:
    dirs: tuple[str, ...]  # top-down, so parents come first
    files: tuple[Entry, ...]
    links: tuple[tuple[str, str], ...]  # (rel, target)

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.files)


@dataclass(frozen=True)
class CopyCounts:
    shared: int  # hardlinked, reflinked or symlinked: data shared with the source
    copied: int  # independent copies (including per-file fallbacks)
    fallbacks: int  # files the requested engine could not share and copied instead
    bytes: int


def scan_tree(root: Path, exclude: Iterable[str] = ()) -> Tree:
    """One walk of `root` with lstat data; `exclude` names top-level entries to skip."""
    skip = set(exclude)
    dirs: list[str] = []
    files: list[Entry] = []
    links: list[tuple[str, str]] = []
    stack = [("", str(root))]
    while stack:
        rel_dir, path = stack.pop()
        subdirs = []
        with os.scandir(path) as it:
            for de in it:
                if not rel_dir and de.name in skip:
                    continue
                rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                if de.is_symlink():
                    links.append((rel, os.readlink(de.path)))
                elif de.is_dir(follow_symlinks=False):
                    subdirs.append((rel, de.path))
                else:
                    st = de.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        files.append(Entry(rel, st.st_size, stat.S_IMODE(st.st_mode),
                                           st.st_atime_ns, st.st_mtime_ns))
        subdirs.sort()
        dirs.extend(r for r, _ in subdirs)
        stack.extend(reversed(subdirs))
    return Tree(tuple(dirs), tuple(files), tuple(links))


# --- one file -------------------------------------------------------------------------

def _open_pair(src: str, dst: str) -> tuple[int, int]:
    fdi = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fdo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except BaseException:
        os.close(fdi)
        raise
    return fdi, fdo


def _finish(fdo: int, e: Entry) -> None:
    # The owner may write to a clone; setuid/setgid bits are never carried over.
    os.fchmod(fdo, (e.mode & 0o777) | stat.S_IRUSR | stat.S_IWUSR)
    os.utime(fdo, ns=(e.atime_ns, e.mtime_ns))


def _kernel_copy(fdi: int, fdo: int, size: int) -> None:
    """copy_file_range, then sendfile, then read/write: the first the kernel allows."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(fdi, fdo, size - done)
            if n == 0:
                break
            done += n
        return
    except OSError as ex:
        if ex.errno not in _FALLBACK_ERRNOS or done:
            raise
    try:
        while done < size:
            n = os.sendfile(fdo, fdi, None, size - done)
            if n == 0:
                break
            done += n
        return
    except OSError as ex:
        if ex.errno not in _FALLBACK_ERRNOS or done:
            raise
    while chunk := os.read(fdi, 1 << 20):
        os.write(fdo, chunk)


def copy_file(src: str, dst: str, e: Entry) -> None:
    fdi, fdo = _open_pair(src, dst)
    try:
        if e.size:
            _kernel_copy(fdi, fdo, e.size)
        _finish(fdo, e)
    finally:
        os.close(fdi)
        os.close(fdo)


def reflink_file(src: str, dst: str, e: Entry) -> None:
    fdi, fdo = _open_pair(src, dst)
    try:
        if e.size:
            fcntl.ioctl(fdo, FICLONE, fdi)
        _finish(fdo, e)
    finally:
        os.close(fdi)
        os.close(fdo)


def hardlink_file(src: str, dst: str, e: Entry) -> None:
    os.link(src, dst, follow_symlinks=False)


def symlink_file(src: str, dst: str, e: Entry) -> None:
    os.symlink(src, dst)


ENGINES: dict[str, Callable[[str, str, Entry], None]] = {
    "reflink": reflink_file, "hardlink": hardlink_file, "copy": copy_file, "thin": symlink_file,
}


# --- probes ---------------------------------------------------------------------------

def protected_hardlinks() -> bool:
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    except OSError:
        return False


def probe(mode: str, src: Path, scratch: Path) -> str | None:
    """Try `mode` on one real file into `scratch`; None if it works, else why not."""
    if mode in ("copy", "thin"):
        return None
    target = scratch / ".sitestack-probe"
    e = Entry("", 1, 0o644, 0, 0)
    try:
        ENGINES[mode](str(src), str(target), e)
    except OSError as ex:
        return _why(mode, ex, src)
    finally:
        if os.path.lexists(target):
            os.unlink(target)
    return None


def _why(mode: str, ex: OSError, src: Path) -> str:
    if ex.errno == errno.EXDEV:
        return "the clone and the stack are on different filesystems"
    if mode == "reflink" and ex.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY, errno.ENOSYS):
        return "this filesystem has no copy-on-write clones (FICLONE)"
    if mode == "hardlink" and ex.errno == errno.EPERM and protected_hardlinks():
        owner = src.stat().st_uid
        return (f"fs.protected_hardlinks=1 and the stack's files belong to uid {owner}, "
                f"not to you (uid {os.getuid()})")
    return f"{os.strerror(ex.errno or 0)} ({src})"


# --- many files -----------------------------------------------------------------------

def _batches(files: Sequence[Entry]) -> list[Sequence[Entry]]:
    return [files[i:i + BATCH] for i in range(0, len(files), BATCH)]


def clone_files(src_root: Path, dst_root: Path, files: Sequence[Entry], mode: str, *,
                jobs: int, progress: Progress | None = None) -> CopyCounts:
    """Put every file of `files` under dst_root with `mode`; folders must exist already.

    A file that cannot be linked/reflinked (one odd file after a good probe) is copied.
    """
    engine = ENGINES[mode]
    src_s, dst_s = str(src_root), str(dst_root)
    shares = mode != "copy"

    def work(batch: Sequence[Entry]) -> tuple[int, int, int, int]:
        shared = copied = fell = nbytes = 0
        for e in batch:
            s, d = f"{src_s}/{e.rel}", f"{dst_s}/{e.rel}"
            try:
                engine(s, d, e)
                shared += shares
                copied += not shares
            except OSError as ex:
                if not shares or ex.errno not in _FALLBACK_ERRNOS:
                    raise
                if os.path.lexists(d):
                    os.unlink(d)
                copy_file(s, d, e)
                copied += 1
                fell += 1
            nbytes += e.size
        if progress:
            progress(len(batch), nbytes)
        return shared, copied, fell, nbytes

    totals = [0, 0, 0, 0]
    batches = _batches(files)
    if jobs <= 1 or len(batches) <= 1:
        results: Iterable[tuple[int, int, int, int]] = map(work, batches)
        for r in results:
            totals = [a + b for a, b in zip(totals, r, strict=True)]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(work, b) for b in batches]
            try:
                for f in futures:
                    totals = [a + b for a, b in zip(totals, f.result(), strict=True)]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return CopyCounts(*totals)


def make_dirs(dst_root: Path, dirs: Iterable[str]) -> None:
    for d in dirs:
        os.mkdir(f"{dst_root}/{d}", 0o755)
