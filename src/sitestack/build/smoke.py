"""Smoke tests: run with the new stack's own python, in a clean environment."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sitestack.errors import SmokeTestError

if TYPE_CHECKING:
    from sitestack.core.log import BuildLog
    from sitestack.site.spec import StackSpec

_IMPORTS = r"""
import importlib, json, sys, traceback
out = {"prefix": sys.prefix, "results": []}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        out["results"].append([name, True, ""])
    except BaseException:
        out["results"].append([name, False, traceback.format_exc(limit=3)])
print(json.dumps(out))
"""


def clean_env(prefix: Path, home: str) -> dict[str, str]:
    """No user site, no bytecode writes, nothing from the builder's shell."""
    return {
        "PATH": f"{prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        # Bytecode is compiled once, after relocation, for the final path.
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run_smoke_tests(spec: StackSpec, prefix: Path, py_xy: str, log: BuildLog) -> list[dict[str, object]]:
    py = str(prefix / "bin" / f"python{py_xy}")
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="sitestack-smoke-") as home:
        env = clean_env(prefix, home)
        imports = ["pip", *spec.tests.imports]
        t0 = time.monotonic()
        r = _run([py, "-c", _IMPORTS, *imports], env, home, spec.tests.timeout)
        if r.returncode != 0:
            _fail("the stack's python", r.stdout + r.stderr, log)
        data = json.loads(r.stdout)
        if os.path.realpath(data["prefix"]) != os.path.realpath(prefix):
            _fail("sys.prefix", f"python reports sys.prefix={data['prefix']}, expected {prefix}", log)
        took = time.monotonic() - t0
        for name, ok, err in data["results"]:
            results.append({"test": f"import {name}", "ok": ok, "output": err, "seconds": round(took, 3)})
            if not ok:
                log.add(json.dumps(results[-1]))
                _fail(f"import {name}", err, log)
        for cmd in spec.tests.commands:
            t0 = time.monotonic()
            r = _run(["bash", "-c", cmd], env, home, spec.tests.timeout)
            out = (r.stdout + r.stderr)[-4000:]
            results.append({"test": cmd, "ok": r.returncode == 0, "output": out,
                            "returncode": r.returncode, "seconds": round(time.monotonic() - t0, 3)})
            if r.returncode != 0:
                _fail(cmd, f"exit code {r.returncode}\n{out}", log)
    log.add(f"{len(results)} smoke test(s) passed")
    return results


def _run(cmd: list[str], env: dict[str, str], cwd: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(cmd, 124, out, f"timed out after {timeout:.0f}s")


def _fail(test: str, output: str, log: BuildLog) -> None:
    log.add(f"FAILED: {test}\n{output}")
    text = output.strip()
    if len(text) > 2000:
        text = "...\n" + text[-2000:]
    raise SmokeTestError(
        f"smoke test failed: {test}\n{text}\nnothing was published and the default did not move"
    )
