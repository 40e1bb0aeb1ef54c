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
from dataclasses import dataclass
from pathlib import Path

from sitestack.core.manifest import Manifest
from sitestack.core.pool import Pool, Task

FICLONE = 0x40049409  # _IOW(0x94, 9, int): share all extents of one file with another
MODES = ("auto", "reflink", "hardlink", "copy", "thin")
BATCH = 64  # files per pool task: enough to amortise the pool's own overhead

# Errors after which a link/reflink of one file is retried as a plain copy.
_FALLBACK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.EOPNOTSUPP,
                    errno.EINVAL, errno.ENOTTY, errno.ENOSYS}

Progress = Callable[[int, int], None]  # (files done, bytes done) since the last call


@dataclass(frozen=True)
class Tree:
    dirs: tuple[str, ...]  # parents before children
    files: tuple[tuple[str, int], ...]  # (rel, size)
    links: tuple[tuple[str, str], ...]  # (rel, target)

    @property
    def bytes(self) -> int:
        return sum(size for _rel, size in self.files)

    def without(self, top: Iterable[str]) -> Tree:
        skip = set(top)

        def keep(rel: str) -> bool:
            return rel.split("/", 1)[0] not in skip

        return Tree(tuple(d for d in self.dirs if keep(d)), tuple(f for f in self.files if keep(f[0])),
                    tuple(x for x in self.links if keep(x[0])))


@dataclass(frozen=True)
class CopyCounts:
    shared: int  # hardlinked, reflinked or symlinked: data shared with the source
    copied: int  # independent copies (including per-file fallbacks)
    fallbacks: int  # files the requested engine could not share and copied instead
    bytes: int


def tree_from_manifest(manifest: Manifest) -> Tree:
    """The stack as built, from its manifest: no walk and no stat of the stack at all."""
    return Tree(tuple(sorted(manifest.dirs)), tuple((p, e.size) for p, e in manifest.files.items()),
                tuple(manifest.symlinks.items()))


# The tree beside a stack's manifest (records.TREE), as marshal writes it: (TREE_FORMAT,
# manifest size, manifest mtime_ns, dirs, files, links, top-level names). A clone of a small
# stack parsed its 2 MB manifest in 35 ms, sha256 strings and all, to use only paths and
# sizes; marshal gives the same tuples in 7 ms. Records are the site's, as trusted as the
# manifest itself (marshal is not for data from strangers).
TREE_FORMAT = 1


def save_tree(path: Path, manifest_path: Path, manifest: Manifest) -> None:
    """Write `path`: what load_tree(manifest_path) gives, for the manifest saved there."""
    import marshal

    from sitestack.core.fsutil import atomic_write_bytes

    files = tuple(sorted((p, e.size) for p, e in manifest.files.items()))  # the JSON's order
    links = tuple(sorted(manifest.symlinks.items()))
    dirs = tuple(sorted(manifest.dirs))
    tops = tuple(sorted({rel.partition("/")[0] for rel in (*dirs, *(f[0] for f in files), *(x[0] for x in links))}))
    st = os.stat(manifest_path)
    atomic_write_bytes(path, marshal.dumps((TREE_FORMAT, st.st_size, st.st_mtime_ns, dirs, files, links, tops)))


def _saved_tree(manifest_path: Path, skip: set[str]) -> Tree | None:
    """The tree saved beside the manifest, if it was made from this very file (its size and
    mtime); None if there is none, or it is stale or unreadable (then the JSON is read)."""
    import marshal

    from sitestack.core.records import TREE

    try:
        with open(manifest_path.with_name(TREE), "rb") as f:
            fmt, size, mtime, dirs, files, links, tops = marshal.loads(f.read())
        st = os.stat(manifest_path)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if fmt != TREE_FORMAT or (size, mtime) != (st.st_size, st.st_mtime_ns) or not all(
            isinstance(x, tuple) for x in (dirs, files, links, tops)):
        return None
    tree = Tree(dirs, files, links)
    return tree.without(skip) if skip.intersection(tops) else tree


def load_tree(path: Path, skip_top: Iterable[str] = ()) -> Tree:
    """tree_from_manifest(Manifest.load(path)).without(skip_top): from the tree saved beside
    the manifest (save_tree) where it is current, else in one pass over the JSON, with no
    FileEntry per file: a clone needs paths and sizes only, and building the full manifest
    was a quarter of a small stack's clone. Corrupt JSON is a VerifyError, as there."""
    import json

    skip = set(skip_top)
    saved = _saved_tree(path, skip)
    if saved is not None:
        return saved
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
        files = tuple((p, int(v[1])) for p, v in data.get("files", {}).items()
                      if p.partition("/")[0] not in skip)
        links = tuple((str(p), str(t)) for p, t in data.get("symlinks", {}).items()
                      if p.partition("/")[0] not in skip)
        dirs = tuple(sorted(str(d) for d in data.get("dirs", []) if d.partition("/")[0] not in skip))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        from sitestack.errors import VerifyError

        raise VerifyError(f"{path} is corrupt or truncated ({type(e).__name__}: {e})",
                          hint="the records were changed: rebuild the stack, or restore "
                               "the file from a backup") from None
    return Tree(dirs, files, links)


def scan_tree(root: Path, prune: Callable[[str], bool] | None = None) -> Tree:
    """One walk of `root` (for a prefix without a manifest); folders for which `prune(rel)`
    is true are neither listed nor entered (an interpreter's own site-packages can hold
    ten times the files of its stdlib)."""
    dirs: list[str] = []
    files: list[tuple[str, int]] = []
    links: list[tuple[str, str]] = []
    stack = [("", str(root))]
    while stack:
        rel_dir, path = stack.pop()
        with os.scandir(path) as it:
            for de in it:
                rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                if de.is_symlink():
                    links.append((rel, os.readlink(de.path)))
                elif de.is_dir(follow_symlinks=False):
                    if prune is None or not prune(rel):
                        dirs.append(rel)
                        stack.append((rel, de.path))
                elif de.is_file(follow_symlinks=False):
                    files.append((rel, de.stat(follow_symlinks=False).st_size))
    return Tree(tuple(sorted(dirs)), tuple(files), tuple(links))


# --- one file -------------------------------------------------------------------------
# Each engine puts one file at dst; copies take mode and mtimes from the open source.

def _open_pair(src: str, dst: str) -> tuple[int, int, os.stat_result]:
    """Open src, and create dst with src's permission bits plus the owner's read/write
    (a clone is writable; setuid/setgid bits are never carried over; umask applies)."""
    fdi = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fdi)
        fdo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                      (st.st_mode & 0o777) | stat.S_IRUSR | stat.S_IWUSR)
    except BaseException:
        os.close(fdi)
        raise
    return fdi, fdo, st


def _kernel_copy(fdi: int, fdo: int, size: int) -> None:
    """copy_file_range, then sendfile, then read/write: the first the kernel allows."""
    done = 0
    steps: tuple[Callable[[int], int], ...] = (
        lambda n: os.copy_file_range(fdi, fdo, n),
        lambda n: os.sendfile(fdo, fdi, None, n),
    )
    for step in steps:
        try:
            while done < size:
                n = step(size - done)
                if n == 0:
                    break
                done += n
            return
        except OSError as ex:
            # Fall back only if nothing was written yet; a later failure is real.
            if ex.errno not in _FALLBACK_ERRNOS or done:
                raise
    while chunk := os.read(fdi, 1 << 20):
        os.write(fdo, chunk)


def copy_file(src: str, dst: str) -> None:
    fdi, fdo, st = _open_pair(src, dst)
    try:
        if st.st_size:
            _kernel_copy(fdi, fdo, st.st_size)
        os.utime(fdo, ns=(st.st_atime_ns, st.st_mtime_ns))  # keeps .pyc valid
    finally:
        os.close(fdi)
        os.close(fdo)


def reflink_file(src: str, dst: str) -> None:
    fdi, fdo, st = _open_pair(src, dst)
    try:
        if st.st_size:
            fcntl.ioctl(fdo, FICLONE, fdi)
        os.utime(fdo, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fdi)
        os.close(fdo)


def hardlink_file(src: str, dst: str) -> None:
    os.link(src, dst, follow_symlinks=False)


ENGINES: dict[str, Callable[[str, str], None]] = {
    "reflink": reflink_file, "hardlink": hardlink_file, "copy": copy_file, "thin": os.symlink,
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
    try:
        ENGINES[mode](str(src), str(target))
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

def _batch_worker(src_root: Path, dst_root: Path, mode: str, progress: Progress | None
                  ) -> Callable[[Sequence[tuple[str, int]]], tuple[int, int, int]]:
    """One pool task of clone_files and clone_tree: put a batch; (files, fallbacks, bytes).

    A file that cannot be linked/reflinked (one odd file after a good probe) is copied.
    """
    engine = ENGINES[mode]
    src_s, dst_s = str(src_root), str(dst_root)
    shares = mode != "copy"

    def work(batch: Sequence[tuple[str, int]]) -> tuple[int, int, int]:
        fell = nbytes = 0
        for rel, size in batch:
            s, d = f"{src_s}/{rel}", f"{dst_s}/{rel}"
            try:
                engine(s, d)
            except OSError as ex:
                if not shares or ex.errno not in _FALLBACK_ERRNOS:
                    raise
                if os.path.lexists(d):
                    os.unlink(d)
                copy_file(s, d)
                fell += 1
            nbytes += size
        if progress:
            progress(len(batch), nbytes)
        return len(batch), fell, nbytes

    return work


def clone_files(src_root: Path, dst_root: Path, files: Sequence[tuple[str, int]], mode: str, *,
                jobs: int, progress: Progress | None = None) -> CopyCounts:
    """Put every (rel, size) of `files` under dst_root with `mode`; folders must exist.

    A file that cannot be linked/reflinked (one odd file after a good probe) is copied.
    """
    shares = mode != "copy"
    work = _batch_worker(src_root, dst_root, mode, progress)

    done = fell = nbytes = 0
    batches = [files[i:i + BATCH] for i in range(0, len(files), BATCH)]
    if jobs <= 1 or len(batches) <= 1:
        for n, f, b in map(work, batches):
            done, fell, nbytes = done + n, fell + f, nbytes + b
    else:
        with Pool(jobs) as pool:
            futures = [pool.submit(work, b) for b in batches]
            try:
                for fut in futures:
                    n, f, b = fut.result()
                    done, fell, nbytes = done + n, fell + f, nbytes + b
            except BaseException:
                pool.shutdown(wait=True, cancel=True)
                raise
    return _counts(shares, done, fell, nbytes)


def _counts(shares: bool, done: int, fell: int, nbytes: int) -> CopyCounts:
    """The counts of a clone: `done` files placed, `fell` of them copied because sharing failed."""
    if shares:
        return CopyCounts(shared=done - fell, copied=fell, fallbacks=fell, bytes=nbytes)
    return CopyCounts(shared=0, copied=done, fallbacks=0, bytes=nbytes)


def clone_tree(src_root: Path, dst_root: Path, dirs: Sequence[str], files: Sequence[tuple[str, int]],
               mode: str, *, jobs: int, progress: Progress | None = None,
               on_ready: Callable[[], None] | None = None, ready_after: int = 0) -> CopyCounts:
    """make_dirs, then clone_files, overlapped: the folders are made in order by this thread
    while the pool already links (or copies) the files of the folders made so far.
    `on_ready` runs in the pool as soon as the first `ready_after` folders exist (the clone
    relocates and compiles its own copies meanwhile); its exception is raised here.

    mkdir is the slow call on ext4 (a new inode and block each, ~10x a link) and gets slower,
    not faster, when run in parallel; `cp -al` does it first and links afterwards, so a clone
    that links meanwhile costs about the folders' time alone."""
    dst_s = str(dst_root)
    shares = mode != "copy"
    by_dir: dict[str, list[tuple[str, int]]] = {}
    for item in files:
        by_dir.setdefault(item[0].rpartition("/")[0], []).append(item)
    work = _batch_worker(src_root, dst_root, mode, progress)

    done = fell = nbytes = 0
    with Pool(jobs) as pool:
        futures: list[Task] = []
        try:
            batch = list(by_dir.pop("", ()))
            if on_ready is not None and ready_after == 0:
                futures.append(pool.submit(on_ready))
            for i, d in enumerate(dirs, 1):  # parents before children
                os.mkdir(f"{dst_s}/{d}", 0o755)
                if on_ready is not None and i == ready_after:
                    futures.append(pool.submit(on_ready))
                batch += by_dir.pop(d, ())
                if len(batch) >= BATCH:
                    futures.append(pool.submit(work, batch))
                    batch = []
            if by_dir:  # a file whose folder is not in `dirs`: as clone_files would, fail
                raise FileNotFoundError(errno.ENOENT, "no such folder in the plan",
                                        f"{dst_s}/{next(iter(by_dir))}")
            if batch:
                futures.append(pool.submit(work, batch))
            for fut in futures:
                counts = fut.result()
                if counts is not None:
                    done, fell, nbytes = done + counts[0], fell + counts[1], nbytes + counts[2]
        except BaseException:
            pool.shutdown(wait=True, cancel=True)
            raise
    return _counts(shares, done, fell, nbytes)


def make_dirs(dst_root: Path, dirs: Iterable[str]) -> None:
    for d in dirs:
        os.mkdir(f"{dst_root}/{d}", 0o755)
