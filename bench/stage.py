"""Benchmark `sitestack stage` against its peers; prints figures and ratios.

    python bench/stage.py [--work DIR] [--repeat 3] [--ranks 8] [--latency-ms 1]
                          [--fuse-cache-s 1] [--skip-extract] [--skip-bcast] [--skip-fuse]
                          [--skip-mount] [--nodes 4] [--import-rounds 10]

0. stage --mount (root; builds examples/conda.toml from PyPI once): on --nodes simulated
   nodes (mpiexec ... unshare -m: each rank a private mount namespace with its own empty
   tmpfs, the same path everywhere), `stage --mount` of the published image against `stage`
   of the published tar.zst (extraction), alternated --repeat times, page cache dropped before
   each: seconds until every node is ready; then `import numpy` from a kernel mount, from a
   squashfuse_ll mount of the same image at the same path and from an extracted copy,
   alternated, cold and warm; then this machine's rates and the model (5 GB on 1,000 and 4,096
   nodes, every term, with the issue's published rates and with these);
1. extract rate: `sitestack stage --archive --no-mpi` (extract + sha256 of every file from
   the stream + relocate + atomic rename) against a bare `tar -I zstd -x` of the same tree
   (what python-mpi-bcast does, without checksums or relocation), alternated --repeat times,
   page cache dropped before each;
2. broadcast bandwidth: mpi4py Bcast of 64 MiB chunks between 2 ranks (loopback);
3. slow shared filesystem: a FUSE passthrough (bench/slowfs.py, mfusepy) mounted over the site root's own
   path that sleeps --latency-ms on every metadata operation (getattr, which is also every
   lookup, readdir, open, readlink, access, statfs), standing in for Lustre. Like a Lustre
   client, the kernel caches attributes, lookups and misses for --fuse-cache-s, and file
   data across opens. N ranks run `import pandas, scipy` straight from it, against
   `sitestack stage` through it (rank 0 reads the stack via the mount) and then importing
   from the staged copy; also `stage --archive` with a pre-made archive on the mount.
   Every step runs under a time limit; the mount is always unmounted.

Set PYTHONPATH=/path/to/other/src to time another sitestack tree the same way.
Length (over ~400 lines, on purpose): one entry point for every staging figure, as the issues
name it; the slow filesystem's server is bench/slowfs.py.
Builds a pandas+scipy stack from PyPI once (network) with `sitestack build`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from slowfs import slow_mount  # noqa: E402

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


# --- stage --mount on simulated nodes -----------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "conda.toml"
EXAMPLE_REF = "conda/2022-07-19"
EXAMPLE_IMPORT = "import numpy"

NODE = r"""mount --make-rprivate / && mount -t tmpfs tmpfs "$LOCAL" || exit 99
O="$OUT/r$OMPI_COMM_WORLD_RANK"
t0=$(date +%s.%N); "$PY" -m sitestack stage "$REF" --to "$LOCAL" $MODE --json >"$O.json" 2>"$O.err"
rc=$?; t1=$(date +%s.%N); echo "$rc $t0 $t1" >"$O.t"
"""


def ensure_example(work: Path) -> Path:
    """The README's example stack (examples/conda.toml: numpy) in its own site root."""
    root = work / "example-site"
    if not (root / "stacks" / EXAMPLE_REF).is_dir():
        print(f"building {EXAMPLE_REF} from {EXAMPLE} (PyPI) ...", flush=True)
        timed(sitestack("build", str(EXAMPLE), "--root", str(root), "--version", "2022-07-19", "--default"),
              env=env())
    return root


def stage_on_nodes(root: Path, local: Path, mode: str, nodes: int) -> dict[str, object]:
    """`stage EXAMPLE` on `nodes` ranks under mpiexec, each rank a node with a private mount
    namespace and its own empty tmpfs on `local`. Seconds until every node was ready (the
    first rank's start to the last rank's end), and the slowest rank's own `seconds`."""
    out = local.parent / "node-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    e = env(LOCAL=str(local), OUT=str(out), PY=sys.executable, REF=EXAMPLE_REF, SITESTACK_ROOT=str(root),
            MODE="--mount" if mode == "mount" else "",
            SITESTACK_STAGE_NODE_MAP=",".join(f"{i}:n{i}" for i in range(nodes)))
    run(["mpiexec", "-n", str(nodes), "--oversubscribe", "unshare", "-m", "sh", "-c", NODE], 600, env=e)
    starts, ends, own, hows = [], [], [], set()
    for i in range(nodes):
        rc, t0, t1 = (out / f"r{i}.t").read_text().split()
        if rc != "0":
            raise SystemExit(f"stage ({mode}) failed on rank {i}: {(out / f'r{i}.err').read_text()[-2000:]}")
        res = json.loads((out / f"r{i}.json").read_text())
        starts.append(float(t0))
        ends.append(float(t1))
        own.append(res["seconds"])
        hows.add(res["how"])
    return {"ready_s": max(ends) - min(starts), "own_s": max(own), "how": sorted(hows)}


TIME_IMPORT = r"""set -e
mount --make-rprivate / && mount -t tmpfs tmpfs "$LOCAL"
"$PY" -m sitestack stage "$REF" --to "$LOCAL" --mount --no-mpi --json >"$OUT/m.json"
"$PY" -m sitestack stage "$REF" --to "$LOCAL/x" --no-mpi --json >"$OUT/x.json"
"$PY" "$BENCH" --time-imports "$OUT" "$ROUNDS"
"""


def time_imports(out: Path, rounds: int) -> None:
    """(inside the namespace TIME_IMPORT makes) `python -c IMPORT` from the kernel mount, from a
    squashfuse_ll mount of the same image at the same path (in a namespace of its own, entered
    with nsenter: it stays mounted across runs, as a node's mount does), and from the extracted
    copy, alternating; cold (caches dropped before each run), then warm. Writes times.json."""
    m = json.loads((out / "m.json").read_text())["path"]
    x = json.loads((out / "x.json").read_text())["path"]
    image = str(Path(m).parent / ".images" / f"{Path(m).name}.sqfs")
    fuse = subprocess.Popen(["unshare", "-m", "sh", "-c", 'umount "$1" && squashfuse_ll -o ro "$2" "$1" '
                             '&& echo mounted && exec sleep 3600', "sh", m, image],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fuse.stdout is not None and fuse.stdout.readline().strip() == "mounted"
        one = 't0=$(date +%s%N); "$1/stack/bin/python" -c "$2"; t1=$(date +%s%N); echo $((t1 - t0))'
        times: dict[str, list[float]] = {}
        for cold in (True, False):
            pre = "sync; echo 3 >/proc/sys/vm/drop_caches; " if cold else ""
            variants = {
                "kernel": ["sh", "-c", pre + one, "sh", m, EXAMPLE_IMPORT],
                "squashfuse_ll": ["nsenter", "-t", str(fuse.pid), "-m", "sh", "-c", pre + one, "sh", m,
                                  EXAMPLE_IMPORT],
                "extracted": ["sh", "-c", pre + one, "sh", x, EXAMPLE_IMPORT],
            }
            for i in range(rounds + (0 if cold else 1)):  # warm: a first round warms up, untimed
                for name, argv in variants.items():
                    r = subprocess.run(argv, capture_output=True, text=True, check=True)
                    if cold or i:
                        times.setdefault(f"{name} {'cold' if cold else 'warm'}", []).append(
                            int(r.stdout.split()[-1]) / 1e9)
    finally:  # the daemon lives in that namespace: unmounted there, it exits, and the namespace goes
        subprocess.run(["nsenter", "-t", str(fuse.pid), "-m", "fusermount3", "-u", m], capture_output=True)
        fuse.kill()
        fuse.wait()
    (out / "times.json").write_text(json.dumps(times))


def measure_rates(image: Path, nodes: int) -> dict[str, float]:
    """Rates of this machine for the model: sha256 per thread and on all cores, writing to
    /dev/shm, reading the image cold, listing it, mounting it, the loopback broadcast."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    buf = os.urandom(64 << 20)
    t = time.perf_counter()
    for _ in range(4):
        hashlib.sha256(buf).digest()
    sha1 = 4 * len(buf) / (time.perf_counter() - t)
    cores = os.cpu_count() or 1
    pieces = [memoryview(buf)[i:i + (2 << 20)] for i in range(0, len(buf), 2 << 20)]
    with ThreadPoolExecutor(8) as pool:
        t = time.perf_counter()
        for _ in range(4):
            list(pool.map(lambda v: hashlib.sha256(v).digest(), pieces))
        sha8 = 4 * len(buf) / (time.perf_counter() - t)
    shm = Path("/dev/shm") / f"sitestack-bench-{os.getpid()}"
    t = time.perf_counter()
    with open(shm, "wb") as f:
        for _ in range(8):
            f.write(buf)
    write = 8 * len(buf) / (time.perf_counter() - t)
    shm.unlink()
    drop_caches()
    t = time.perf_counter()
    size = len(image.read_bytes())
    read = size / (time.perf_counter() - t)
    t = time.perf_counter()
    listing = subprocess.run(["unsquashfs", "-lln", "-d", "", str(image)], capture_output=True, check=True).stdout
    entries = listing.count(b"\n") / (time.perf_counter() - t)
    mnt = image.parent / "mount-probe"
    mnt.mkdir(exist_ok=True)
    t = time.perf_counter()
    subprocess.run(["mount", "-t", "squashfs", "-o", "ro,loop", str(image), str(mnt)], check=True)
    mount_s = time.perf_counter() - t
    subprocess.run(["umount", str(mnt)], check=True)
    mnt.rmdir()
    # rank 0 reads the stack's records to see that the published image is the stack's own
    from sitestack.core.layout import SiteRoot
    from sitestack.scale.pack import resolve

    root = SiteRoot(image.parent.parent.parent)
    t = time.perf_counter()
    header, _parts = resolve(EXAMPLE_REF, root)
    records_files_s = header.files / (time.perf_counter() - t)
    return {"sha256_1": sha1, "sha256_8": sha8, "cores": cores, "write_shm": write, "read_cold": read,
            "list_entries_s": entries, "records_files_s": records_files_s, "mount_s": mount_s,
            "bcast": bench_bcast()}


def model(rates: dict[str, float], fixed_s: float) -> None:
    """5 GB ready on N nodes: every term, with the issue's published rates and with this
    machine's, serial and overlapped (reading, sending, writing and checking run at once)."""
    from sitestack.scale.mpibcast import DEPTH
    from sitestack.scale.stage import DEFAULT_CHUNK

    u, s = 5e9, 1.45e9  # the stack; its image (zstd, measured ratio 0.29)
    files = 5e9 * 11441 / 396e6  # pandas+scipy's 11,441 files in 396 MB, scaled
    columns = {
        "published": {"R_fs": 1.2e9, "B": 10e9, "W": 1.6e9, "H": 8 * rates["sha256_1"], "mount": 0.020},
        "this machine": {"R_fs": rates["read_cold"], "B": rates["bcast"], "W": rates["write_shm"],
                         "H": rates["sha256_8"], "mount": rates["mount_s"]},
    }
    print(f"\nmodel: {u / 1e9:.0f} GB stack, {s / 1e9:.2f} GB image, {files:,.0f} files, "
          f"{DEFAULT_CHUNK >> 20} MiB chunks x {DEPTH} buffers; sha256 {rates['sha256_1'] / 1e9:.2f} GB/s "
          f"per thread here (H published = 8 threads of it)")
    for n in (1000, 4096):
        steps = math.ceil(math.log2(n))
        print(f"  {n} nodes ({steps} broadcast steps):")
        for col, r in columns.items():
            terms = {
                "rank 0 reads the stack's records (is the image its own?)": files / rates["records_files_s"],
                "read the image once (rank 0)": s / r["R_fs"],
                "pipelined broadcast": s / r["B"] + steps * DEFAULT_CHUNK / r["B"],
                "write on every node": s / r["W"],
                "sha256 per chunk as it arrives": s / r["H"],
                "sha256 again from disk": s / r["H"],
                "listing check": files / rates["list_entries_s"],
                "mount": r["mount"],
                "launch, Python, MPI_Init, header, locks (1 node, measured here)": fixed_s,
            }
            serial = sum(terms.values())
            stream = ("read the image once (rank 0)", "pipelined broadcast", "write on every node",
                      "sha256 per chunk as it arrives")
            fill = sum(DEFAULT_CHUNK / v for v in (r["R_fs"], r["B"], r["W"], r["H"]))
            overlapped = max(terms[k] for k in stream) + fill + sum(v for k, v in terms.items() if k not in stream)
            goal = 10 if n == 1000 else 15
            print(f"    {col}: " + "; ".join(f"{k} {v:.2f} s" for k, v in terms.items()))
            print(f"    {col}: serial {serial:.2f} s, overlapped {overlapped:.2f} s (goal <= {goal} s: "
                  f"{'met' if overlapped <= goal else 'NOT met'})")


def bench_mount(work: Path, nodes: int, repeat: int, rounds: int) -> None:
    root = ensure_example(work)
    local = work / "local"
    local.mkdir(exist_ok=True)
    timed(sitestack("pack", EXAMPLE_REF, "--publish", "--root", str(root)), env=env())
    timed(sitestack("pack", EXAMPLE_REF, "--publish", "--format", "squashfs", "--to", str(local),
                    "--root", str(root)), env=env())
    prefix = root / "stacks" / EXAMPLE_REF
    size = sum(f.stat().st_size for f in prefix.rglob("*") if f.is_file() and not f.is_symlink())
    arch = root / "archives" / "conda"
    print(f"\nexample stack {EXAMPLE_REF}: {size / 1e6:.0f} MB; published tar.zst "
          f"{(arch / '2022-07-19.tar.zst').stat().st_size / 1e6:.1f} MB, image "
          f"{(arch / '2022-07-19.sqfs').stat().st_size / 1e6:.1f} MB")
    one_node_ready = 0.0
    for n in sorted({1, nodes}):  # one node: a node's own work, without the others on these 2 cores
        runs: dict[str, list[dict[str, object]]] = {"extract": [], "mount": []}
        for _ in range(repeat):
            for mode in ("extract", "mount"):  # alternating, page cache dropped before each
                drop_caches()
                runs[mode].append(stage_on_nodes(root, local, mode, n))
        med = {m: statistics.median(float(r["ready_s"]) for r in rs) for m, rs in runs.items()}  # type: ignore[arg-type]
        own = {m: statistics.median(float(r["own_s"]) for r in rs) for m, rs in runs.items()}  # type: ignore[arg-type]
        for mode, rs in runs.items():
            print(f"stage{' --mount' if mode == 'mount' else ''} on {n} node(s) ({rs[0]['how']}): ready in "
                  + _figures([float(r["ready_s"]) for r in rs])  # type: ignore[arg-type]
                  + "; the command's own seconds " + ", ".join(f"{float(r['own_s']):.2f}" for r in rs))  # type: ignore[arg-type]
        if n == 1:
            one_node_ready = med["mount"]
        print(f"ratio stage --mount / stage on {n} node(s) (medians): {med['mount'] / med['extract']:.2f}x "
              f"ready (the whole mpiexec), {own['mount'] / own['extract']:.2f}x the command's own seconds "
              "(goal <= 0.3x)")

    out = local.parent / "import-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    run(["unshare", "-m", "sh", "-c", TIME_IMPORT], 900,
        env=env(LOCAL=str(local), OUT=str(out), PY=sys.executable, REF=EXAMPLE_REF, SITESTACK_ROOT=str(root),
                BENCH=str(Path(__file__).resolve()), ROUNDS=str(rounds)))
    times = json.loads((out / "times.json").read_text())
    print(f"`{EXAMPLE_IMPORT}` (whole `python -c`), {rounds} alternating runs each:")
    for kind in ("cold", "warm"):
        base = statistics.median(times[f"extracted {kind}"])
        for name in ("kernel", "squashfuse_ll", "extracted"):
            xs = times[f"{name} {kind}"]
            print(f"  {kind} {name:<13} median {statistics.median(xs) * 1000:6.1f} ms "
                  f"({statistics.median(xs) / base:.2f}x extracted; min {min(xs) * 1000:.1f} ms)")
    print("goal: from the mount <= 1.1x from an extracted copy")

    rates = measure_rates(arch / "2022-07-19.sqfs", nodes)
    print("rates here: " + ", ".join(f"{k} {v / 1e9:.2f} GB/s" if k not in ("cores", "list_entries_s",
                                                                         "records_files_s", "mount_s")
                                     else f"{k} {v:.3g}" for k, v in rates.items()))
    # What a stage costs beyond the data path (mpiexec, Python, MPI_Init, the header, locks,
    # listing, mount): one node's whole `stage --mount`, less the data terms for this small image.
    img = (arch / "2022-07-19.sqfs").stat().st_size
    data = img / rates["read_cold"] + img / rates["write_shm"] + 2 * img / rates["sha256_8"]
    model(rates, max(0.0, one_node_ready - data))


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
    ap.add_argument("--skip-mount", action="store_true")
    ap.add_argument("--nodes", type=int, default=4, help="simulated nodes for stage --mount")
    ap.add_argument("--import-rounds", type=int, default=10)
    ap.add_argument("--time-imports", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.time_imports:
        time_imports(Path(a.time_imports[0]), int(a.time_imports[1]))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if not a.skip_mount:
        print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        bench_mount(work, a.nodes, a.repeat, a.import_rounds)
        print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if a.skip_extract and a.skip_bcast and a.skip_fuse:
        return
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
