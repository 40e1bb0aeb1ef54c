"""Benchmark: `conda create --clone base -p DIR` (the conda front door) against `sitestack clone`
of the same stack: goal ≤ 1.2× its time.

Both run as users run them: the site's own `conda` and `sitestack` commands
(ROOT/.sitestack/tools/ID/bin, build/sitetool.py) in an environment where the stack is loaded
(SITESTACK_PREFIX & co., as `module load` sets them). The two are run alternately, N pairs,
into fresh folders on the same filesystem; medians, every pair's ratio and `uptime` are printed.

    python bench/conda_clone.py [--pairs 9] [--root ROOT --stack NAME/VERSION] [--user sstest] [--keep]

Without --root it builds bench/clone.py's stack (numpy, scipy, pandas, matplotlib,
scikit-learn from PyPI) into a temp root first. --user also times a non-owner (whose clone
is a copy: protected hardlinks), through setpriv.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def rm(path: Path) -> None:
    if os.path.lexists(path):
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def tool_bin(root: Path) -> Path:
    ident = json.loads((root / ".sitestack" / "tool.json").read_text())["id"]
    return root / ".sitestack" / "tools" / ident / "bin"


def loaded_env(root: Path, stack: Path, ref: str, home: str) -> dict[str, str]:
    return {"PATH": f"{tool_bin(root)}:{stack}/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
            "SITESTACK_PREFIX": str(stack), "SITESTACK_STACK": ref, "SITESTACK_STACK_ROOT": str(root)}


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {argv}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    return dt


def pairs(root: Path, stack: Path, ref: str, work: Path, n: int, wrap: list[str], home: str) -> None:
    env = loaded_env(root, stack, ref, home)
    bin_ = tool_bin(root)
    runs: dict[str, list[float]] = {"sitestack clone": [], "conda create --clone base": []}
    argv = {"sitestack clone": lambda d: [str(bin_ / "sitestack"), "clone", "--prefix", str(d)],
            "conda create --clone base": lambda d: [str(bin_ / "conda"), "create", "--clone", "base", "-p", str(d)]}
    order = list(argv)
    for i in range(n):
        for name in order if i % 2 == 0 else reversed(order):  # alternate which goes first
            dest = work / f"clone-{i}-{name.split()[0]}"
            rm(dest)
            runs[name].append(timed([*wrap, *argv[name](dest)], env))
            rm(dest)
    a, b = runs["sitestack clone"], runs["conda create --clone base"]
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(f"  sitestack clone              median {statistics.median(a):.3f} s  (min {min(a):.3f})")
    print(f"  conda create --clone base    median {statistics.median(b):.3f} s  (min {min(b):.3f})")
    print(f"  ratio of medians {statistics.median(b) / statistics.median(a):.2f}x; pair ratios "
          + ", ".join(f"{r:.2f}" for r in ratios) + f" (median {statistics.median(ratios):.2f}x); goal <= 1.2x")
    print("  runs: " + ", ".join(f"{x:.3f}/{y:.3f}" for x, y in zip(a, b, strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--root", type=Path, help="an existing site root (built by this sitestack)")
    ap.add_argument("--stack", default=None, help="NAME/VERSION in --root")
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--user", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp root (reuse it with --root)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sitestack-bench-conda-", dir=a.dir))
    os.chmod(work, 0o755)
    try:
        if a.root is None:
            from clone import build_stack  # bench/clone.py's stack

            root, stack = work / "site", build_stack(work / "site", sys.executable)
        else:
            root = a.root.resolve()
            stack = root / "stacks" / str(a.stack)
        ref = "/".join(stack.parts[-2:])
        rec = json.loads((stack / ".sitestack" / "stack.json").read_text())
        up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"# {ref}: {rec['files']} files, {rec['bytes'] / 2**20:.0f} MiB; {os.cpu_count()} cpus; {up}")
        print(f"\n## owner ({pwd.getpwuid(os.getuid()).pw_name}): hardlink clones")
        pairs(root, stack, ref, work, a.pairs, [], str(work))
        if a.user:
            pw = pwd.getpwnam(a.user)
            uwork = work / "user"
            uwork.mkdir()
            os.chown(uwork, pw.pw_uid, pw.pw_gid)
            wrap = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]
            print(f"\n## non-owner ({a.user}): copies")
            pairs(root, stack, ref, uwork, a.pairs, wrap, str(uwork))
        up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"\n# after: {up}")
    finally:
        if a.keep:
            print(f"# kept {work}")
        else:
            rm(work)


if __name__ == "__main__":
    main()
