"""Benchmark conda stacks against bare py-rattler, and measure cache sharing on disk.

    python bench/conda_build.py [--repeat 3] [--json out.json]

1. time: sitestack's conda install (conda.solve_and_install, and the full `sitestack build`
   when the build supports [conda]) vs bare rattler.solve + rattler.install of the same
   local-channel stack, each with a warm package cache. Goal: ratio <= 1.3.
2. disk: two versions of a stack that share 90% of their packages, installed through one
   site cache; the second may add at most 15% to the first (bytes of distinct inodes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from sitestack.conda import install as conda  # noqa: E402
from sitestack.site.spec import CondaSpec  # noqa: E402
from tests.helpers.condachannel import Package, PkgFile, make_channel  # noqa: E402

N_BLOBS = 20


def blob_packages() -> list[Package]:
    """N noarch packages at 1.0 and 2.0, each with a few hundred KiB of files."""
    out = []
    for i in range(N_BLOBS):
        for v in ("1.0", "2.0"):
            files = [PkgFile(f"share/blob{i}/part{j}.dat", os.urandom(64 << 10)) for j in range(4)]
            out.append(Package(f"blob{i}", v, "noarch", files, noarch="generic"))
    return out


def disk_bytes(*prefixes: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in prefixes:
        for dirpath, _dirs, files in os.walk(p):
            for f in files:
                st = os.lstat(os.path.join(dirpath, f))
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def timed(fn: Callable[[], object], repeat: int, reset: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        reset()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bare_rattler(channel: Path, specs: list[str], prefix: Path, final: Path, cache: Path) -> None:
    import rattler

    async def go() -> None:
        recs = await rattler.solve(sources=[str(channel)], specs=specs)
        await rattler.install(recs, target_prefix=prefix, cache_dir=cache,
                              alternative_target_prefix=final, show_progress=False)

    asyncio.run(go())


def full_build(channel: Path, specs: list[str], root: Path, n: int) -> bool:
    """`sitestack build` of the same stack; False if the build does not support [conda] yet."""
    try:
        from sitestack.build.stack import BuildLog, build
        from sitestack.core.layout import SiteRoot
        from sitestack.site.spec import parse_spec
    except ImportError:
        return False
    text = (f'[stack]\nname = "c"\n[conda]\nchannels = ["{channel}"]\n'
            f"packages = {json.dumps(specs)}\n")
    try:
        build(parse_spec(text), SiteRoot(root), version=f"v{n}", log=BuildLog(echo=False))
    except Exception as e:  # not wired yet
        print(f"  (full build unavailable: {type(e).__name__}: {str(e).splitlines()[0]})")
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="ss-bench-conda-") as tmpd:
        tmp = Path(tmpd)
        t = time.perf_counter()
        channel = make_channel(tmp / "channel", "3.11", extra=blob_packages())
        print(f"channel built in {time.perf_counter() - t:.1f}s")
        blobs = [f"blob{i} 1.0.*" for i in range(N_BLOBS)]
        specs = ["python 3.11.*", "pyhello", "binpfx", *blobs]
        cache = tmp / "root" / ".sitestack" / "pkgs"
        work = tmp / "root" / ".sitestack" / "tmp"
        final = tmp / "root" / "stacks" / "c" / "v"

        def reset() -> None:
            for d in ("a", "b"):
                shutil.rmtree(work / d, ignore_errors=True)

        # Warm the cache once so both sides link from it.
        bare_rattler(channel, specs, work / "warm", final, cache)
        shutil.rmtree(work / "warm")
        t_bare = timed(lambda: bare_rattler(channel, specs, work / "a", final, cache), args.repeat, reset)
        t_ss = timed(lambda: conda.solve_and_install(CondaSpec((str(channel),), tuple(specs)),
                                                     work / "b", final, cache), args.repeat, reset)
        ratio = t_ss / t_bare
        print(f"install: bare rattler {t_bare:.3f}s, sitestack conda {t_ss:.3f}s, ratio {ratio:.2f} (goal <= 1.3)")
        results.update(bare_s=t_bare, sitestack_install_s=t_ss, install_ratio=ratio)

        counter = iter(range(1000))
        if full_build(channel, specs, tmp / "fullroot", next(counter)):
            t_full = timed(lambda: full_build(channel, specs, tmp / "fullroot", next(counter)),
                           args.repeat, lambda: None)
            print(f"full sitestack build {t_full:.3f}s, ratio {t_full / t_bare:.2f} vs bare rattler")
            results.update(full_build_s=t_full, full_build_ratio=t_full / t_bare)

        # Disk: v1 and v2 share 90% of the blob packages (2 of 20 change version).
        reset()
        a, b = tmp / "root" / "stacks" / "c" / "v1", tmp / "root" / "stacks" / "c" / "v2"
        conda.solve_and_install(CondaSpec((str(channel),), tuple(specs)), a, a, cache)
        specs2 = ["python 3.11.*", "pyhello", "binpfx", *blobs[:-2], *(f"blob{i} 2.0.*" for i in (18, 19))]
        conda.solve_and_install(CondaSpec((str(channel),), tuple(specs2)), b, b, cache)
        one, both = disk_bytes(a), disk_bytes(a, b)
        added = (both - one) / one
        print(f"disk: v1 {one / 2**20:.1f} MiB, v1+v2 {both / 2**20:.1f} MiB, second adds {added:.1%} (goal <= 15%)")
        results.update(disk_v1=one, disk_both=both, disk_added=added)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    ok = ratio <= 1.3 and added <= 0.15
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
