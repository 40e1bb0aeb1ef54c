"""Time a stack's Jupyter kernel against a plain ipykernel in a uv venv of the same packages.

    python bench/kernel.py [-n 15] [--root ROOT --stack NAME/VERSION] [--wheels DIR]
                           [--jupyter /opt/sitestack-test/jupyter]

What is timed: from the start of the kernel's process to the reply of its first
execute_request (`1 + 1`), by real jupyter_client (KernelManager.start_kernel, then a client
that waits for the kernel to be ready and executes), in the Jupyter venv install-test-deps makes
(never a stack). Three kernels, alternately, one run of each per round (the load of a shared
machine changes by the second), after an untimed round that warms the page cache:

- `uv venv`: `uv venv` + `uv pip install --compile-bytecode` of the stack's own pins, and the
  kernelspec `python -m ipykernel install` would write (argv: its python -m ipykernel_launcher);
- `stack`: the site kernel (the launch script renders the module's environment, then execs
  the stack's python);
- `layer`: `sitestack venv --kernel` on the stack (ipykernel from the stack).

Without --root, a throw-away stack with ipykernel is built from this interpreter and the
wheels install-test-deps downloads (offline). The goal (issue 25): stack and layer <= 1.2x
the uv venv. Prints medians, ratios and the load (`uptime` before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import clean_env  # noqa: E402

TIMER = r"""
import json, sys, time
from jupyter_client.manager import KernelManager
names, n = json.loads(sys.argv[1]), int(sys.argv[2])
times = {k: [] for k in names}
for rnd in range(n + 1):
    for name in names:
        km = KernelManager(kernel_name=name)
        t0 = time.perf_counter()
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            reply = kc.execute_interactive("1 + 1", timeout=120, output_hook=lambda m: None)
            took = time.perf_counter() - t0
            assert reply["content"]["status"] == "ok", reply
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        if rnd:
            times[name].append(took)
print(json.dumps(times))
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def build_stack(root: Path, wheels: Path) -> str:
    spec = root.parent / "spec.toml"
    spec.write_text(f'[stack]\nname = "bench"\npython = "{sys.executable}"\n\n'
                    f'[packages]\nrequirements = ["ipykernel"]\nfind-links = ["{wheels}"]\nno-index = true\n')
    subprocess.run([sys.executable, "-m", "sitestack", "--root", str(root), "build", str(spec),
                    "--version", "1", "--default"], check=True, env=clean_env(), capture_output=True)
    return "bench/1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--root")
    ap.add_argument("--stack")
    ap.add_argument("--wheels", default=os.environ.get("SITESTACK_TEST_WHEELS", "/opt/sitestack-test/wheels"))
    ap.add_argument("--jupyter", default=os.environ.get("SITESTACK_TEST_JUPYTER", "/opt/sitestack-test/jupyter"))
    args = ap.parse_args()
    from sitestack.core.layout import SiteRoot
    from sitestack.site.kernels import stack_kernel_name
    from sitestack.site.registry import Site

    with tempfile.TemporaryDirectory(prefix="bench-kernel-") as tmp:
        work = Path(tmp)
        root = Path(args.root) if args.root else work / "site"
        ref = args.stack if args.root else build_stack(root, Path(args.wheels))
        rec = Site(SiteRoot(root)).get(ref)
        data = work / "data"
        env = clean_env(JUPYTER_DATA_DIR=str(data), JUPYTER_PATH=str(root / "share" / "jupyter"),
                        JUPYTER_RUNTIME_DIR=str(work / "runtime"), IPYTHONDIR=str(work / "ipython"))
        # The peer: a uv venv of the stack's own pins, with ipykernel's usual kernelspec.
        venv = work / "uvvenv"
        subprocess.run(["uv", "venv", "-q", "--python", str(rec.python_exe), str(venv)], check=True, env=env)
        pins = [f"{n}=={v}" for n, v in rec.packages.items() if n not in ("pip", "setuptools", "wheel")]
        subprocess.run(["uv", "pip", "install", "-q", "--compile-bytecode", "--no-index", "--find-links",
                        args.wheels, "--python", str(venv / "bin" / "python"), *pins], check=True, env=env)
        (data / "kernels" / "uvvenv").mkdir(parents=True)
        (data / "kernels" / "uvvenv" / "kernel.json").write_text(json.dumps({
            "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "uv venv", "language": "python"}))
        layer = work / "benchlayer"
        subprocess.run([sys.executable, "-m", "sitestack", "--root", str(root), "venv", "--stack", ref,
                        str(layer), "--kernel"], check=True, env=env, capture_output=True)
        names = {"uv venv": "uvvenv", "stack": stack_kernel_name(rec.name, rec.version), "layer": "benchlayer"}
        before = uptime()
        r = subprocess.run([str(Path(args.jupyter) / "bin" / "python"), "-c", TIMER,
                            json.dumps(list(names.values())), str(args.n)],
                           env=env, capture_output=True, text=True)
        after = uptime()
        if r.returncode != 0:
            sys.exit(f"the timer failed:\n{r.stderr[-3000:]}")
        times = json.loads(r.stdout.strip().splitlines()[-1])
    base = statistics.median(times["uvvenv"])
    print(f"kernel start to first execute reply, median of {args.n} alternating runs ({ref})")
    for label, name in names.items():
        med = statistics.median(times[name])
        print(f"  {label:<8} {med * 1000:7.0f} ms   {med / base:5.2f}x uv venv   "
              f"(min {min(times[name]) * 1000:.0f}, max {max(times[name]) * 1000:.0f})")
    print(f"uptime before: {before}\nuptime after:  {after}")


if __name__ == "__main__":
    main()
