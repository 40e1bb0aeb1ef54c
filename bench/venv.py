"""Time `sitestack venv` against its peers on one stack, in one run, and print ratios.

    python bench/venv.py [--root ROOT --stack NAME/VERSION] [-n 15]

Without --root a throw-away stack (Python only, plus pip) is built from this interpreter.
Every tool makes a layer with the stack's packages visible, on the same stack python.
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


def timed(cmd: list[str], dest: Path, n: int) -> list[float]:
    from sitestack.core.fsutil import rmtree

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    out = []
    for _ in range(n):
        rmtree(dest)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        out.append(time.perf_counter() - t0)
    rmtree(dest)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root")
    ap.add_argument("--stack", default="bench/1")
    ap.add_argument("-n", type=int, default=15)
    a = ap.parse_args()
    from sitestack.core.layout import SiteRoot
    from sitestack.core.uvtool import uv_bin
    from sitestack.site.registry import Site

    tmp = Path(tempfile.mkdtemp(prefix="sitestack-bench-venv-"))
    root = Path(a.root) if a.root else tmp / "site"
    if not a.root:
        from sitestack.build.stack import BuildLog, build
        from sitestack.site.spec import parse_spec

        spec = parse_spec(f'[stack]\nname = "bench"\npython = "{sys.executable}"\nsite = "bench"\n'
                          '[packages]\nrequirements = []\n')
        build(spec, SiteRoot(root), version="1", log=BuildLog(echo=False))
    rec = Site(SiteRoot(root)).get(a.stack)
    py = str(rec.python_exe)
    dest = tmp / "layer"
    bindir = Path(sys.executable).parent
    cases = [
        ("sitestack venv", [str(bindir / "sitestack"), "venv", "--root", str(root), "--stack", rec.ref, str(dest)], a.n),
        ("uv venv --system-site-packages", [uv_bin(), "venv", "-q", "--system-site-packages", "--python", py, str(dest)], a.n),
        ("python -m venv --system-site-packages --without-pip", [py, "-m", "venv", "--system-site-packages", "--without-pip", str(dest)], a.n),
        ("python -m venv --system-site-packages (with pip)", [py, "-m", "venv", "--system-site-packages", str(dest)], max(3, a.n // 5)),
        ("virtualenv --system-site-packages", [sys.executable, "-m", "virtualenv", "-q", "--system-site-packages", "-p", py, str(dest)], max(3, a.n // 3)),
        ("(floor) sitestack's python -c pass", [sys.executable, "-c", "pass"], a.n),
    ]
    results = []
    for name, cmd, n in cases:
        try:
            ts = timed(cmd, dest, n)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            print(f"{name}: skipped ({e})")
            continue
        results.append((name, min(ts), statistics.median(ts), n))
    base = results[0][2]
    print(f"stack {rec.ref} (Python {rec.python}) at {rec.prefix}")
    print(f"{'tool':55} {'runs':>4} {'min ms':>8} {'median ms':>10} {'x sitestack':>12}")
    for name, tmin, tmed, n in results:
        print(f"{name:55} {n:>4} {tmin * 1e3:8.1f} {tmed * 1e3:10.1f} {tmed / base:12.2f}")
    from sitestack.core.fsutil import rmtree

    rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
