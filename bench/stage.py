"""Benchmark `sitestack stage` against its peers; prints figures and ratios.

    python bench/stage.py [--work DIR] [--repeat 3] [--ranks 8] [--latency-ms 1]
                          [--fuse-cache-s 1] [--skip-extract] [--skip-bcast] [--skip-fuse]

1. extract rate: `sitestack stage --archive --no-mpi` (extract + sha256 of every file from
   the stream + relocate + atomic rename) against a bare `tar -I zstd -x` of the same tree
   (what python-mpi-bcast does, without checksums or relocation), alternated --repeat times,
   page cache dropped before each;
2. broadcast bandwidth: mpi4py Bcast of 64 MiB chunks between 2 ranks (loopback);
3. slow shared filesystem: a FUSE passthrough (mfusepy) mounted over the site root's own
   path that sleeps --latency-ms on every metadata operation (getattr, which is also every
   lookup, readdir, open, readlink, access, statfs), standing in for Lustre. Like a Lustre
   client, the kernel caches attributes, lookups and misses for --fuse-cache-s, and file
   data across opens. N ranks run `import pandas, scipy` straight from it, against
   `sitestack stage` through it (rank 0 reads the stack via the mount) and then importing
   from the staged copy; also `stage --archive` with a pre-made archive on the mount.
   Every step runs under a time limit; the mount is always unmounted.

Set PYTHONPATH=/path/to/other/src to time another sitestack tree the same way.
Builds a pandas+scipy stack from PyPI once (network) with `sitestack build`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
SPEC = """[stack]
name = "bench"
python = "{python}"
site = "bench"
[packages]
requirements = ["pandas", "scipy"]
[tests]
imports = ["pandas", "scipy"]
"""


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    e.update(MPI_ENV, **extra)
    return e


def run(cmd: list[str], limit: float, **kw: object) -> tuple[float, str]:
    """Run cmd in its own process group under a time limit; (seconds, stdout). On time-out
    the whole group is killed (mpiexec's ranks too) and the benchmark stops."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, **kw)  # type: ignore[call-overload]
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise SystemExit(f"timed out after {limit:.0f} s: {' '.join(cmd)}") from None
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out[-2000:]}\n{err[-2000:]}")
    return dt, out


def timed(cmd: list[str], limit: float = 600, **kw: object) -> float:
    return run(cmd, limit, **kw)[0]


def drop_caches() -> None:
    subprocess.run(["sync"])
    with contextlib.suppress(OSError):  # not root: figures then include warm page cache
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def sitestack(*args: str) -> list[str]:
    return [sys.executable, "-m", "sitestack", *args]


def ensure_stack(work: Path) -> Path:
    root = work / "site"
    prefix = root / "stacks" / "bench" / "1"
    if not prefix.is_dir():
        spec = work / "bench.toml"
        spec.write_text(SPEC.format(python=sys.executable))
        print("building bench/1 (pandas + scipy) from PyPI ...", flush=True)
        timed(sitestack("build", str(spec), "--version", "1", "--root", str(root)), env=env())
    return prefix


def bench_extract(work: Path, root: Path, prefix: Path, repeat: int) -> dict[str, object]:
    archive = work / "bench.tar.zst"
    t_pack = timed(sitestack("pack", "bench/1", "-o", str(archive), "--root", str(root)), env=env())
    plain = work / "plain.tar.zst"
    timed(["tar", "-I", "zstd -3 -T0", "-cf", str(plain), "-C", str(prefix), "."])
    size = sum(f.stat().st_size for f in prefix.rglob("*") if f.is_file() and not f.is_symlink())
    out: dict[str, object] = {"bytes": size, "pack_s": t_pack, "archive_bytes": archive.stat().st_size,
                              "sitestack_s": [], "tar_s": []}
    dest = work / "local-extract"
    for _ in range(repeat):
        for name, cmd in (
            ("sitestack_s", sitestack("stage", "--archive", str(archive), "--to", str(dest), "--no-mpi")),
            ("tar_s", ["sh", "-c", f"mkdir -p {dest}/tar && tar -I zstd -xf {plain} -C {dest}/tar"]),
        ):
            subprocess.run(sitestack("unstage", "--to", str(dest)), capture_output=True)
            shutil.rmtree(dest, ignore_errors=True)
            drop_caches()
            out[name].append(timed(cmd, 300, env=env()))  # type: ignore[attr-defined]
    subprocess.run(sitestack("unstage", "--to", str(dest)), capture_output=True)
    shutil.rmtree(dest, ignore_errors=True)
    return out


BCAST = r"""
import time
from mpi4py import MPI
c = MPI.COMM_WORLD
buf = bytearray(64 << 20)
n = 16
c.Barrier(); t = time.perf_counter()
for _ in range(n):
    c.Bcast([buf, MPI.BYTE], root=0)
c.Barrier(); dt = time.perf_counter() - t
if c.rank == 0:
    print(n * len(buf) / dt)
"""


def bench_bcast() -> float:
    _dt, out = run(["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-c", BCAST], 120,
                   env=env())
    return float(out.split()[0])


# --- the slow filesystem ------------------------------------------------------------------------

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
    proc = subprocess.Popen([sys.executable, __file__, "--serve-fuse", str(root),
                             "--latency-ms", str(latency_ms), "--fuse-cache-s", str(cache_s)])
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


IMPORT = "import pandas, scipy"


def bench_fuse(work: Path, root: Path, prefix: Path, ranks: int, latency_ms: float,
               cache_s: float) -> dict[str, float]:
    """Times of: direct import on N ranks; stage TARGET + import; stage --archive + import;
    stage TARGET + import when the site has published the stack's archive (`pack --publish`)."""
    mpiexec = ["mpiexec", "-n", str(ranks), "--oversubscribe"]
    archive = root / "bench.tar.zst"  # a pre-made archive on the slow filesystem too
    shutil.copyfile(work / "bench.tar.zst", archive)
    dest = work / "local-stage"
    out: dict[str, float] = {}
    published = root / "archives" / "bench" / "1.tar.zst"  # where `pack --publish` puts it
    # The mount is read-only, so the published archive goes in between two mounts: the
    # first TARGET run must read the stack's files, the second finds the archive.
    phases = [[("stage", ["bench/1"]), ("archive", ["--archive", str(archive)])],
              [("published", ["bench/1"])]]
    try:
        for n, phase in enumerate(phases):
            if n == 1:
                published.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(work / "bench.tar.zst", published)
            with slow_mount(root, latency_ms, cache_s):
                if n == 0:
                    drop_caches()
                    out["direct_s"] = timed([*mpiexec, str(prefix / "bin" / "python3"), "-c", IMPORT],
                                            600, env=env())
                for key, what in phase:
                    subprocess.run(sitestack("unstage", "--to", str(dest)), capture_output=True,
                                   timeout=120)
                    time.sleep(cache_s)  # let the kernel's cached lookups of the last step expire
                    drop_caches()
                    dt, text = run([*mpiexec, *sitestack("stage", *what, "--to", str(dest), "--root",
                                                         str(root))], 600, env=env())
                    staged_py = Path(text.split()[0]).parent / "stack" / "bin" / "python3"
                    out[f"{key}_s"] = dt
                    out[f"{key}_import_s"] = timed([*mpiexec, str(staged_py), "-c", IMPORT], 600,
                                                   env=env())
    finally:
        subprocess.run(sitestack("unstage", "--to", str(dest)), capture_output=True, timeout=120)
        archive.unlink(missing_ok=True)
        published.unlink(missing_ok=True)
    return out


def _figures(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s (" + ", ".join(f"{x:.2f}" for x in xs) + ")"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/sitestack-bench-stage")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--latency-ms", type=float, default=1.0)
    ap.add_argument("--fuse-cache-s", type=float, default=1.0)
    ap.add_argument("--skip-extract", action="store_true")
    ap.add_argument("--skip-bcast", action="store_true")
    ap.add_argument("--skip-fuse", action="store_true")
    ap.add_argument("--serve-fuse", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_fuse:
        serve_fuse(a.serve_fuse, a.latency_ms / 1000, a.fuse_cache_s)
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    prefix = ensure_stack(work)
    root = work / "site"
    if not a.skip_extract or not (work / "bench.tar.zst").is_file():
        x = bench_extract(work, root, prefix, a.repeat)
        mb = x["bytes"] / 1e6  # type: ignore[operator]
        ss, ts = x["sitestack_s"], x["tar_s"]
        ms, mt = statistics.median(ss), statistics.median(ts)  # type: ignore[arg-type]
        print(f"stack: {mb:.0f} MB, archive {x['archive_bytes'] / 1e6:.0f} MB, "  # type: ignore[operator]
              f"pack {x['pack_s']:.1f} s")
        print(f"extract, sitestack stage --archive --no-mpi: {_figures(ss)} = {mb / ms:.0f} MB/s "  # type: ignore[arg-type]
              f"(checksummed + relocated; best {mb / min(ss):.0f} MB/s)")  # type: ignore[type-var]
        print(f"extract, tar -I zstd -x:                      {_figures(ts)} = {mb / mt:.0f} MB/s")  # type: ignore[arg-type]
        print(f"ratio sitestack / tar (medians): {ms / mt:.2f}x")
    if not a.skip_bcast:
        print(f"broadcast (loopback, 2 ranks, 64 MiB chunks): {bench_bcast() / 1e9:.2f} GB/s")
    if not a.skip_fuse:
        f = bench_fuse(work, root, prefix, a.ranks, a.latency_ms, a.fuse_cache_s)
        print(f"slow FS (+{a.latency_ms:g} ms per metadata op, {a.fuse_cache_s:g} s kernel cache), "
              f"{a.ranks} ranks, `{IMPORT}`:")
        print(f"  direct from the mount:            {f['direct_s']:.1f} s")
        for key, what in (("stage", "stage TARGET through it"), ("archive", "stage --archive on it"),
                          ("published", "stage TARGET, archive published")):
            total = f[f"{key}_s"] + f[f"{key}_import_s"]
            print(f"  {what} + import: {total:.1f} s (stage {f[f'{key}_s']:.1f} s, import "
                  f"{f[f'{key}_import_s']:.1f} s): {f['direct_s'] / total:.1f}x faster (goal >= 5x)")


if __name__ == "__main__":
    main()
