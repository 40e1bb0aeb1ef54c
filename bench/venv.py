"""Time `sitestack venv` against its peers on one stack, in one run, and print ratios.

    python bench/venv.py [--root ROOT --stack NAME/VERSION] [-n 25] [--tool-venv DIR] [--baseline-venv DIR]

sitestack is timed the way users run it: its own venv with sitestack installed from this
checkout, not editable (what `uv tool install` and pipx do), started through that venv's
`sitestack` script. Without --tool-venv one is made in a temp folder with `uv venv` +
`uv pip install --compile-bytecode` (needs the package index or uv's cache, for the deps).
Without --root a throw-away stack (Python only, plus pip) is built from this interpreter.
Every tool makes a layer with the stack's packages visible, on the same stack python; the
layer is deleted between runs, the cases run alternately (one run of each per round), and a
first untimed round warms the page cache and .pyc files. The load printed is the mean of the
1-minute load average before and after.

`--baseline-venv DIR`: another tool venv (e.g. sitestack installed from main) whose `sitestack
venv` runs in the same rounds, for before/after figures side by side.

The goal (issue 9): `sitestack venv` <= 2x `uv venv --system-site-packages`. The floor rows
show what no Python tool can beat: the tool venv's interpreter starting and exiting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import bench_site, clean_env, tool_venv  # noqa: E402


def timed(cases: list[tuple[str, list[str], int]], dest: Path) -> dict[str, list[float]]:
    """Every case once per round, alternately (the load of a shared machine changes by the
    second; one case's runs in a row would each meet a different load). Round 0 warms caches
    (page cache, .pyc) and is not counted; a case runs in the first `n` rounds after it."""
    from sitestack.core.fsutil import rmtree

    e = clean_env()
    out: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    dead: set[str] = set()
    for i in range(max(n for _, _, n in cases) + 1):
        for name, cmd, n in cases:
            if i > n or name in dead:
                continue
            rmtree(dest)
            t0 = time.perf_counter()
            try:
                subprocess.run(cmd, check=True, capture_output=True, env=e)
            except (subprocess.CalledProcessError, FileNotFoundError) as err:
                print(f"{name}: skipped ({err})")
                dead.add(name)
                continue
            if i:
                out[name].append(time.perf_counter() - t0)
    rmtree(dest)
    return {name: ts for name, ts in out.items() if name not in dead and ts}


def import_profile(tool: Path, cmd: list[str], dest: Path) -> list[tuple[float, str]]:
    """The slowest top-level imports of one `sitestack venv` run (-X importtime), in ms."""
    from sitestack.core.fsutil import rmtree

    rmtree(dest)
    r = subprocess.run([str(tool / "bin" / "python"), "-X", "importtime", "-c",
                        "import sys; from sitestack.cli import main; sys.exit(main())", *cmd[1:]],
                       capture_output=True, text=True, env=clean_env(), check=True)
    rmtree(dest)
    rows = []
    for line in r.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) == 1:  # imported by __main__ itself
                rows.append((int(parts[1]) / 1000, name.strip()))
    return sorted(rows, reverse=True)[:8]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root")
    ap.add_argument("--stack", default="bench/1")
    ap.add_argument("-n", type=int, default=25)
    ap.add_argument("--tool-venv", help="a venv with sitestack installed (default: make one)")
    ap.add_argument("--baseline-venv", help="another venv with sitestack installed, timed beside it")
    a = ap.parse_args()
    from sitestack.core.layout import SiteRoot
    from sitestack.core.uvtool import uv_bin
    from sitestack.site.registry import Site

    uv = uv_bin()
    tmp = Path(tempfile.mkdtemp(prefix="sitestack-bench-venv-"))
    root = bench_site(a.root, tmp)
    tool = Path(a.tool_venv) if a.tool_venv else tool_venv(tmp / "tool", uv)
    rec = Site(SiteRoot(root)).get(a.stack)
    py = str(rec.python_exe)
    dest = tmp / "layer"
    tpy = str(tool / "bin" / "python")
    ours = [str(tool / "bin" / "sitestack"), "venv", "--root", str(root), "--stack", rec.ref, str(dest)]
    base = ([(f"sitestack venv (baseline {a.baseline_venv})",
              [str(Path(a.baseline_venv) / "bin" / "sitestack"), *ours[1:]], a.n)] if a.baseline_venv else [])
    cases = [
        ("sitestack venv (own venv, not editable)", ours, a.n), *base,
        ("uv venv --system-site-packages", [uv, "venv", "-q", "--system-site-packages", "--python", py, str(dest)], a.n),
        ("python -m venv --system-site-packages --without-pip", [py, "-m", "venv", "--system-site-packages", "--without-pip", str(dest)], a.n),
        ("python -m venv --system-site-packages (with pip)", [py, "-m", "venv", "--system-site-packages", str(dest)], max(3, a.n // 5)),
        ("virtualenv --system-site-packages", [sys.executable, "-m", "virtualenv", "-q", "--system-site-packages", "-p", py, str(dest)], max(3, a.n // 3)),
        ("(floor) tool venv's python -c pass", [tpy, "-c", "pass"], a.n),
        ("(floor) tool venv's python -S -c pass (no site.py)", [tpy, "-S", "-c", "pass"], a.n),
    ]
    load0 = os.getloadavg()[0]
    results = {name: (min(ts), statistics.median(ts), len(ts)) for name, ts in timed(cases, dest).items()}
    ours_min, ours_med = results[cases[0][0]][:2]
    uv_min, uv_med = results["uv venv --system-site-packages"][:2]
    load = (load0 + os.getloadavg()[0]) / 2
    print(f"stack {rec.ref} (Python {rec.python}) at {rec.prefix}; sitestack from {tool}; load {load:.1f}")
    print(f"{'tool':55} {'runs':>4} {'min ms':>8} {'median ms':>10} {'x uv venv':>10} {'x sitestack':>12}")
    for name, (tmin, tmed, n) in results.items():
        print(f"{name:55} {n:>4} {tmin * 1e3:8.1f} {tmed * 1e3:10.1f} {tmed / uv_med:10.2f} {tmed / ours_med:12.2f}")
    if base and base[0][0] in results:
        b_min, b_med = results[base[0][0]][:2]
        print(f"baseline sitestack venv / uv venv: {b_med / uv_med:.2f}x on medians, {b_min / uv_min:.2f}x on "
              f"min times; this tree / baseline: {ours_med / b_med:.2f}x on medians")
    floor = results.get("(floor) tool venv's python -c pass")
    print(f"sitestack venv / uv venv: {ours_med / uv_med:.2f}x on medians, {ours_min / uv_min:.2f}x on min "
          f"times (goal <= 2x)")
    if floor:
        print(f"  of which interpreter start-up (python -c pass): {floor[1] * 1e3:.1f} ms; "
              f"sitestack's own work (imports + making the layer): {(ours_med - floor[1]) * 1e3:.1f} ms")
    print("slowest imports of one run (-X importtime, cumulative ms):")
    for ms, name in import_profile(tool, ours, dest):
        print(f"  {ms:6.1f}  {name}")
    from sitestack.core.fsutil import rmtree

    rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
