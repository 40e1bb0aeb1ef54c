"""Smoke tests side by side against one after another, on a published stack.

    python bench/smoketests.py --prefix ROOT/stacks/NAME/VERSION [--repeat 3]

Runs the stack's own smoke tests (its .sitestack/spec.toml) with `run_smoke_tests`, no
hashing beside them, alternately with SITESTACK_SMOKE_JOBS=1 (one after another, as before
build/smoke.py ran them side by side) and with the default width (one per CPU), and prints
the medians and their ratio with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402


def one_run(prefix: Path, jobs: str | None) -> float:
    import json

    from sitestack.build.smoke import run_smoke_tests
    from sitestack.core.log import BuildLog
    from sitestack.site.spec import parse_spec

    rec = prefix / ".sitestack"
    spec = parse_spec((rec / "spec.toml").read_text(encoding="utf-8"))
    xy = json.loads((rec / "stack.json").read_text())["python_xy"]
    if jobs is None:
        os.environ.pop("SITESTACK_SMOKE_JOBS", None)
    else:
        os.environ["SITESTACK_SMOKE_JOBS"] = jobs
    t0 = time.perf_counter()
    results = run_smoke_tests(spec, prefix, xy, BuildLog(echo=False), stop_on_failure=False)
    took = time.perf_counter() - t0
    if any(r["status"] == "failed" for r in results):
        sys.exit(f"a smoke test failed: {[r['test'] for r in results if r['status'] == 'failed']}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefix", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    seq, par = [], []
    load0 = os.getloadavg()[0]
    for _ in range(a.repeat):
        seq.append(one_run(a.prefix, "1"))
        par.append(one_run(a.prefix, None))
    from sitestack.build.smoke import smoke_width

    report(f"smoke tests of {a.prefix} (median of {a.repeat}, alternating; load average "
           f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end)",
           [("one after another (SITESTACK_SMOKE_JOBS=1)", statistics.median(seq)),
            (f"side by side (width {smoke_width(1000)})", statistics.median(par))],
           "one after another (SITESTACK_SMOKE_JOBS=1)")


if __name__ == "__main__":
    main()
