"""A slow shared filesystem for bench/stage.py: a FUSE passthrough that sleeps on every
metadata operation, mounted over a folder's own path (run as `python bench/slowfs.py PATH
LATENCY_MS CACHE_S`, or through `slow_mount`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def serve_fuse(path: str, latency: float, cache_s: float) -> None:
    """Passthrough mounted over `path` itself; the real tree is reached through a dir fd."""
    import mfusepy as fuse

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    base = f"/proc/self/fd/{fd}"

    def slow() -> None:
        time.sleep(latency)

    class Slow(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def _p(self, p: str) -> str:
            return base + p

        def getattr(self, p: str, fh: int | None = None) -> dict[str, int]:
            slow()
            try:
                st = os.lstat(self._p(p))
            except OSError as e:
                raise fuse.FuseOSError(e.errno or errno.EIO) from None
            keys = ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid", "st_atime_ns",
                    "st_mtime_ns", "st_ctime_ns", "st_ino")
            d = {k: getattr(st, k) for k in keys}
            for k in ("atime", "mtime", "ctime"):
                d[f"st_{k}"] = d.pop(f"st_{k}_ns")
            return d

        def readdir(self, p: str, fh: int) -> list[str]:
            slow()
            return [".", "..", *os.listdir(self._p(p))]

        def readlink(self, p: str) -> str:
            slow()
            return os.readlink(self._p(p))

        def access(self, p: str, mode: int) -> int:
            slow()
            if not os.access(self._p(p), mode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def open(self, p: str, flags: int) -> int:
            slow()
            try:
                return os.open(self._p(p), flags)
            except OSError as e:
                raise fuse.FuseOSError(e.errno or errno.EIO) from None

        def read(self, p: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def release(self, p: str, fh: int) -> int:
            os.close(fh)
            return 0

        def statfs(self, p: str) -> dict[str, int]:
            slow()
            st = os.statvfs(self._p(p))
            return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize",
                                                 "f_favail", "f_ffree", "f_files", "f_flag",
                                                 "f_frsize", "f_namemax")}

    # Like a Lustre client: attributes, lookups and misses are cached for cache_s (Lustre
    # holds them under DLM locks, longer), and file data stays in the page cache across opens.
    # Requests are served by several threads (the sleep releases the GIL), as an MDS serves
    # many clients at once.
    fuse.FUSE(Slow(), path, foreground=True, nothreads=False, ro=True, allow_other=True,
              kernel_cache=True, attr_timeout=cache_s, entry_timeout=cache_s,
              negative_timeout=cache_s)


@contextlib.contextmanager
def slow_mount(root: Path, latency_ms: float, cache_s: float) -> Iterator[None]:
    """The FUSE server over `root` for the duration of the block; always unmounted."""
    proc = subprocess.Popen([sys.executable, __file__, str(root), str(latency_ms), str(cache_s)])
    try:
        for _ in range(100):
            if os.path.ismount(root):
                break
            if proc.poll() is not None:
                raise SystemExit("the FUSE server exited before mounting")
            time.sleep(0.1)
        else:
            raise SystemExit("FUSE mount did not come up")
        yield
    finally:
        for args in (["-u"], ["-u", "-z"]):  # lazy unmount if something still holds it
            if not os.path.ismount(root):
                break
            subprocess.run(["fusermount3", *args, str(root)], capture_output=True, timeout=30)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


if __name__ == "__main__":
    serve_fuse(sys.argv[1], float(sys.argv[2]) / 1000, float(sys.argv[3]))
