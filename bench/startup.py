"""What importing one module costs sitestack's start: each command run alternately as it is and
with the module imported first, in one run, and the difference of each pair.

    python bench/startup.py [--tool-venv DIR] [-n 40] [--module typing] [--root ROOT --stack NAME/VERSION]
    python bench/startup.py --baseline-venv DIR ...    # this tree's start against another's

The commands: `sitestack venv --stack S L` (the layer removed between runs), `sitestack
clone nosuch/1 --prefix P` (to its first error: every module a clone imports is imported by
then), and the conda front door's lines of every shell, with the stack loaded
(SITESTACK_PREFIX): `conda create --clone base -p DIR` into a folder that exists (to that
error: the clone's start), `conda activate base` where the shell has no function (to that
error) and `conda shell.bash activate base` (what the function runs at each activate). Both are started as `python -c "[import MODULE;] from sitestack.cli import main; ..."`
from the tool venv (sitestack installed from this checkout, not editable, as bench/venv.py
makes it), so the two sides differ by that one import. Round 0 warms the caches and is not
counted. Without --root a throw-away stack (Python only, plus pip) is built from this
interpreter. The figure is the median of the pairs' differences (each pair ran under the same
load; each side runs first in half of them), in wall time and in CPU time (user + sys of the
child, os.wait4: on a loaded shared machine it moves far less than wall time), with the
medians of each side. With `--baseline-venv DIR` (another tool venv, e.g.
sitestack installed from main) the two sides are this tree and that one, both as they are.
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

MAIN = "import sys; from sitestack.cli import main; sys.exit(main())"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root")
    ap.add_argument("--stack", default="bench/1")
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--module", default="typing", help="the module whose import is timed (default: typing)")
    ap.add_argument("--tool-venv", help="a venv with sitestack installed (default: make one)")
    ap.add_argument("--baseline-venv", help="compare with this venv's sitestack instead of an import")
    a = ap.parse_args()
    from sitestack.core.fsutil import rmtree
    from sitestack.core.uvtool import uv_bin

    tmp = Path(tempfile.mkdtemp(prefix="sitestack-bench-startup-"))
    root = bench_site(a.root, tmp)
    tool = Path(a.tool_venv) if a.tool_venv else tool_venv(tmp / "tool", uv_bin())
    py = str(tool / "bin" / "python")
    layer = tmp / "layer"
    env = clean_env()
    taken = tmp / "taken"
    (taken / "f").mkdir(parents=True, exist_ok=True)
    (tmp / "home").mkdir(exist_ok=True)
    loaded = {**env, "SITESTACK_PREFIX": str(root / "stacks" / a.stack), "HOME": str(tmp / "home")}
    commands = {
        "sitestack venv": (["venv", "--root", str(root), "--stack", a.stack, str(layer)], 0, env),
        "sitestack clone (to its first error)": (["clone", "--root", str(root), "nosuch/1", "--prefix",
                                                   str(tmp / "clone")], 2, env),
        "conda create --clone base -p (exists)": (["conda", "create", "--clone", "base", "-p", str(taken)], 5, loaded),
        "conda activate base (no function)": (["conda", "activate", "base"], 2, loaded),
        "conda shell.bash activate base": (["conda", "shell.bash", "activate", "base"], 0, loaded),
    }
    load0 = os.getloadavg()[0]
    if a.baseline_venv:
        other = (str(Path(a.baseline_venv) / "bin" / "python"), MAIN)
        labels = ("this tree", "baseline")
        print(f"sitestack from {tool} against {a.baseline_venv}; {a.n} alternating pairs per command")
    else:
        other = (py, f"import {a.module}; {MAIN}")
        labels = ("as it is", "+ import")
        print(f"sitestack from {tool}; module {a.module}; {a.n} alternating pairs per command")
    print(f"{'':40} {'wall ms (medians)':>33}   {'CPU ms, user+sys (medians)':>33}")
    print(f"{'command':40} {labels[0]:>10} {labels[1]:>10} {'2nd - 1st':>10}   "
          f"{labels[0]:>10} {labels[1]:>10} {'2nd - 1st':>10}")
    for name, (args, code, cmd_env) in commands.items():
        wall: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for i in range(a.n + 1):
            for extra in (False, True) if i % 2 else (True, False):  # each side first in half the pairs
                rmtree(layer)
                exe, script = other if extra else (py, MAIN)
                t0 = time.perf_counter()
                proc = subprocess.Popen([exe, "-c", script, *args], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env=cmd_env)
                _, status, usage = os.wait4(proc.pid, 0)
                took = time.perf_counter() - t0
                proc.returncode = os.waitstatus_to_exitcode(status)
                if proc.returncode != code:
                    sys.exit(f"{name}: exit {proc.returncode}, not {code}: {[exe, '-c', script, *args]}")
                if i:
                    wall[extra].append(took)
                    cpu[extra].append(usage.ru_utime + usage.ru_stime)
        row = [name]
        for t in (wall, cpu):
            diffs = [y - x for x, y in zip(t[False], t[True], strict=True)]
            row.append(f"{statistics.median(t[False]) * 1e3:10.1f} {statistics.median(t[True]) * 1e3:10.1f} "
                       f"{statistics.median(diffs) * 1e3:10.2f}")
        print(f"{row[0]:40} {row[1]}   {row[2]}")
        said = []  # does the start import argparse? (-X importtime names every module imported)
        for label, (exe, script) in zip(labels, ((py, MAIN), other), strict=True):
            rmtree(layer)
            r = subprocess.run([exe, "-X", "importtime", "-c", script, *args], capture_output=True, text=True,
                               env=cmd_env)
            said.append(f"{label}: {'yes' if '| argparse' in r.stderr else 'no'}")
        print(f"{'':40} argparse imported: {', '.join(said)}")
    rmtree(layer)
    print(f"load average {(load0 + os.getloadavg()[0]) / 2:.1f} (1-minute, mean of before and after)")
    if a.baseline_venv:
        rmtree(tmp)
        return 0
    # after what both commands import anyway (typing would otherwise be charged for re, functools, ...)
    first = "sitestack.cli, pathlib, json, contextlib"
    for _ in range(3):
        r = subprocess.run([py, "-X", "importtime", "-c", f"import {first}, {a.module}"],
                           capture_output=True, text=True, env=env)
        mine = [ln for ln in r.stderr.splitlines() if ln.rstrip().endswith(f"| {a.module}")]
        print(f"-X importtime (self | cumulative us) after {first}: "
              + (mine[0].removeprefix("import time:").strip() if mine else "(already imported)"))
    rmtree(tmp)  # the stack and tool venv made here, if any (not those given)
    return 0


if __name__ == "__main__":
    sys.exit(main())
