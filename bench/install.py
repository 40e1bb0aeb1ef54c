"""Install scikit-image into a layer on a numpy/scipy/pandas stack: sitestack vs uv vs pip (network).

    python bench/install.py [--root ROOT --stack NAME/VERSION] [-n 3] [--package scikit-image]

Without --root a stack of numpy, scipy and pandas is built from PyPI with this interpreter.
Each tool installs into its own fresh layer on that stack (the layer made before the clock
starts); every cache is warmed by one untimed run first. Printed: the median time, and the
bytes each run adds to the layer (apparent file sizes).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_site, clean_env  # noqa: E402


def tree_bytes(root: Path) -> int:
    total = 0
    for dp, _dns, fns in os.walk(root):
        for n in fns:
            p = os.path.join(dp, n)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root")
    ap.add_argument("--stack", default="bench/1")
    ap.add_argument("--package", default="scikit-image")
    ap.add_argument("-n", type=int, default=3)
    a = ap.parse_args()
    from sitestack.core.fsutil import rmtree
    from sitestack.core.layout import SiteRoot
    from sitestack.core.uvtool import uv_bin
    from sitestack.site.registry import Site

    tmp = Path(tempfile.mkdtemp(prefix="sitestack-bench-install-"))
    root = bench_site(a.root, tmp, ["numpy", "scipy", "pandas"])
    rec = Site(SiteRoot(root)).get(a.stack)
    env = clean_env()
    sitestack = str(Path(sys.executable).parent / "sitestack")
    layer = tmp / "layer"

    def fresh(tool: str) -> None:
        rmtree(layer)
        if tool == "sitestack":
            subprocess.run([sitestack, "venv", "--root", str(root), "--stack", rec.ref, str(layer)],
                           check=True, capture_output=True, env=env)
        else:
            subprocess.run([str(rec.python_exe), "-m", "venv", "--system-site-packages", str(layer)],
                           check=True, capture_output=True, env=env)

    cases = {
        "sitestack install": [sitestack, "install", "--layer", str(layer), a.package],
        "uv pip install": [uv_bin(), "pip", "install", "--python", str(layer / "bin" / "python"), a.package],
        "pip install": [str(layer / "bin" / "python"), "-m", "pip", "install", "-q", a.package],
    }
    rows = []
    for name, cmd in cases.items():
        tool = name.split()[0]
        times, added = [], 0
        for i in range(a.n + 1):  # the first run warms the caches and is not counted
            fresh(tool)
            before = tree_bytes(layer)
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            took = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"{name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
            if i:
                times.append(took)
                added = tree_bytes(layer) - before
        rows.append((name, statistics.median(times), added))
    rmtree(tmp) if not a.root else rmtree(layer)
    print(f"\ninstall {a.package} into a layer on {rec.ref} ({', '.join(sorted(rec.packages))[:80]}...)")
    print(f"  {'tool':<20} {'median s':>9} {'x uv':>6} {'MB added':>9} {'x uv':>6}")
    uv = dict((n, (t, b)) for n, t, b in rows)["uv pip install"]
    for n, t, b in rows:
        print(f"  {n:<20} {t:9.2f} {t / uv[0]:6.2f} {b / 1e6:9.1f} {b / uv[1]:6.2f}")
    s = dict((n, (t, b)) for n, t, b in rows)["sitestack install"]
    print(f"  sitestack / uv: time {s[0] / uv[0]:.2f}x (goal <= 1.5x), bytes {s[1] / uv[1]:.2f}x (goal <= 0.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
