"""Benchmark: `sitestack pack --level L` vs `tar -cf - . | zstd -L -T0` on one published stack.

    python bench/realstack.py --work /tmp/packw --builds-only    # once: the small set, real/2
    python bench/pack.py --root /tmp/packw/site real/2 --rounds 7

The two sides run alternately, ROUNDS times each (a shared machine's load moves single runs
by +-50%); each side's median wall time and median CPU seconds (user + system of the whole
process tree) are printed with their ratios and the load average before and after. The goal
(issue 10): pack <= 1.0x tar|zstd at the same level.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import clean_env, tool_venv  # noqa: E402


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str] | str, *, shell: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    c0, t0 = _children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, shell=shell, env=clean_env(), capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if r.returncode != 0:
        sys.exit(f"benchmark step failed: {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return wall, cpu


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ref", help="NAME/VERSION of a published stack")
    ap.add_argument("--root", required=True, help="the site root")
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--work", help="where the archives go (default: a temp folder)")
    ap.add_argument("--tool-venv", help="a venv with sitestack installed (default: make one in the work folder;"
                                        " sitestack runs as users run it, see bench/realstack.py)")
    a = ap.parse_args()
    prefix = Path(a.root) / "stacks" / a.ref
    work = Path(a.work or tempfile.mkdtemp(prefix="sitestack-bench-pack-"))
    tool = Path(a.tool_venv) if a.tool_venv else tool_venv(work / "tool")
    ours = [str(tool / "bin" / "sitestack"), "pack", a.ref, "-o", str(work / "s.tar.zst"),
            "--level", str(a.level), "--root", a.root]
    peer = (f"tar -cf - -C {prefix} . | zstd -q -f -{a.level} -T0 -o {work / 't.tar.zst'}")
    times: dict[str, list[tuple[float, float]]] = {"sitestack": [], "tar|zstd": []}
    print(f"load before: {_load()}")
    for _ in range(a.rounds):
        times["sitestack"].append(_run(ours))
        times["tar|zstd"].append(_run(peer, shell=True))
    print(f"load after:  {_load()}")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in times.items()}
    base_w, base_c = med["tar|zstd"]
    for k, (w, c) in med.items():
        runs = " ".join(f"{x:.2f}" for x, _ in times[k])
        print(f"  {k:<10} wall {w:6.3f} s ({w / base_w:.2f}x)   cpu {c:6.3f} s ({c / base_c:.2f}x)"
              f"   runs: {runs}")
    sizes = {n: (work / n).stat().st_size for n in ("s.tar.zst", "t.tar.zst")}
    print(f"  size: sitestack {sizes['s.tar.zst'] / 1e6:.1f} MB, tar|zstd {sizes['t.tar.zst'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
