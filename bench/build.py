"""Benchmark: `sitestack build` vs raw `uv pip install --compile-bytecode` vs `venv` + pip.

Same requirements (numpy, scipy, pandas from PyPI), uv cache warm, one run, printed as ratios.
sitestack is timed twice: the first version into a new site root (its compiled package cache
cold) and a second version of the same set (cache warm, as when a site publishes a new date).
Then `python -c "import pandas, scipy"` from the published stack vs from the pip venv.

    python bench/build.py [--requirements numpy scipy pandas] [--imports 15]

Goals (issue 2): build <= 1.3x raw uv; >= 2.5x faster than pip; import <= 1.05x the pip venv.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import clean_env, median_of, report, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requirements", nargs="+", default=["numpy", "scipy", "pandas"])
    ap.add_argument("--imports", type=int, default=15, help="runs of the import timing")
    args = ap.parse_args()
    reqs = args.requirements
    py = sys.executable
    uv = shutil.which("uv") or "uv"
    work = Path(tempfile.mkdtemp(prefix="sitestack-bench-build-"))
    env = clean_env()
    try:
        spec = work / "spec.toml"
        spec.write_text(
            f'[stack]\nname = "bench"\npython = "{py}"\n[packages]\nrequirements = {reqs!r}\n'
            .replace("'", '"') + '[tests]\nimports = ["numpy"]\n')
        # Warm uv's cache (downloads and unpacked wheels) so no timed run downloads.
        timed([uv, "venv", "-q", str(work / "warm"), "--python", py], env=env)
        timed([uv, "pip", "install", "-q", "--python", str(work / "warm" / "bin" / "python"), *reqs], env=env)

        # Cold: a new site root, its package cache empty. Warm: a second dated version of
        # the same set, as a site publishes it, with the site's compiled package cache warm
        # (the counterpart of uv's warm cache). Both are reported.
        t_cold = timed([py, "-m", "sitestack", "build", str(spec), "--root", str(work / "site"),
                        "--version", "0"], env=env)
        t_sitestack = timed([py, "-m", "sitestack", "build", str(spec), "--root", str(work / "site"),
                             "--version", "1"], env=env)
        t_uv = timed(f"{uv} venv -q {work / 'uv'} --python {py} && "
                     f"{uv} pip install -q --compile-bytecode --python {work / 'uv' / 'bin' / 'python'} {' '.join(reqs)}",
                     env=env, shell=True)
        t_pip = timed(f"{py} -m venv {work / 'pip'} && {work / 'pip' / 'bin' / 'pip'} install -q "
                      f"--disable-pip-version-check {' '.join(reqs)}", env=env, shell=True)
        report(f"build of {' '.join(reqs)} (uv cache warm)",
               [("sitestack build (site cache warm)", t_sitestack),
                ("sitestack build (new site, cache cold)", t_cold),
                ("uv venv + uv pip install --compile-bytecode", t_uv),
                ("python -m venv + pip install", t_pip)], "uv venv + uv pip install --compile-bytecode")
        print(f"  pip / sitestack: {t_pip / t_sitestack:.2f}x (goal >= 2.5x); "
              f"sitestack / uv: {t_sitestack / t_uv:.2f}x (goal <= 1.3x)")

        stack_py = work / "site" / "stacks" / "bench" / "1" / "bin" / "python3"
        code = "import pandas, scipy"
        for p in (stack_py, work / "pip" / "bin" / "python"):  # one warm-up each (page cache)
            timed([str(p), "-c", code], env=env)
        i_stack = median_of(args.imports, [str(stack_py), "-c", code], env=env)
        i_pip = median_of(args.imports, [str(work / "pip" / "bin" / "python"), "-c", code], env=env)
        report(f"python -c '{code}' (median of {args.imports})",
               [("published stack", i_stack), ("pip venv", i_pip)], "pip venv")
        print(f"  stack / pip venv: {i_stack / i_pip:.3f}x (goal <= 1.05x)")
    finally:
        from sitestack.core.fsutil import rmtree

        rmtree(work)


if __name__ == "__main__":
    main()
