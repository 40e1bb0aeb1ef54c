"""Smoke tests: run with the new stack's own python, in a clean environment.

At build time a failure stops the build; `sitestack test` reruns them on a published stack
(e.g. in a GPU job) and records the results under ROOT/.sitestack/tests, never in the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sitestack.errors import SmokeTestError

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot
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


def gpu_visible() -> tuple[bool, str]:
    """Whether this node has a GPU the tests can use, and how we know.

    `nvidia-smi -L` listing a GPU, else a device node: /dev/nvidia0 (NVIDIA) or /dev/kfd
    (AMD ROCm). A device node alone is enough: containers often have the device but not the
    tool. SITESTACK_GPU=0 or 1 overrides both (a site whose GPUs show otherwise).
    """
    forced = os.environ.get("SITESTACK_GPU", "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"SITESTACK_GPU={forced}"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0 and "GPU" in r.stdout:
                return True, f"nvidia-smi -L: {r.stdout.strip().splitlines()[0]}"
        except (OSError, subprocess.TimeoutExpired):
            pass
    for dev in ("/dev/nvidia0", "/dev/kfd"):
        if os.path.exists(dev):
            return True, f"{dev} exists"
    return False, "no GPU visible (nvidia-smi -L lists none; no /dev/nvidia0 or /dev/kfd)"


def run_smoke_tests(spec: StackSpec, prefix: Path, py_xy: str, log: BuildLog, *,
                    gpu: bool | None = None, stop_on_failure: bool = True,
                    cpu: bool = True) -> list[dict[str, object]]:
    """Run the spec's tests with the prefix's python. Each result has `status`: passed,
    failed or skipped (`ok` is null for a skipped one: never counted as passed).

    [tests.gpu] runs only where `gpu` (default: gpu_visible()) is true; elsewhere each of its
    tests is recorded as skipped. With `stop_on_failure` the first failure raises
    SmokeTestError (a build); without, every test runs and the failures are in the results.
    """
    py = str(prefix / "bin" / f"python{py_xy}")
    results: list[dict[str, object]] = []
    t = spec.tests
    if gpu is None and (t.gpu_imports or t.gpu_commands):
        gpu, why = gpu_visible()
        log.add(f"GPU tests: {'run' if gpu else 'skipped'} ({why})")
    with tempfile.TemporaryDirectory(prefix="sitestack-smoke-") as home:
        env = clean_env(prefix, home)
        sets: list[tuple[str, tuple[str, ...], tuple[str, ...], bool]] = []
        if cpu:
            sets.append(("", ("pip", *t.imports), t.commands, True))
        if t.gpu_imports or t.gpu_commands:
            sets.append(("gpu", t.gpu_imports, t.gpu_commands, bool(gpu)))
        for kind, imports, commands, run in sets:
            if not run:
                results += [_skipped(f"import {m}", kind) for m in imports]
                results += [_skipped(c, kind) for c in commands]
                continue
            results += _run_set(py, prefix, env, home, imports, commands, kind, t.timeout, log, stop_on_failure)
    passed = sum(1 for r in results if r["status"] == "passed")
    skipped = sum(1 for r in results if r["status"] == "skipped")
    log.add(f"{passed} smoke test(s) passed" + (f", {skipped} skipped" if skipped else ""))
    return results


def _skipped(test: str, kind: str) -> dict[str, object]:
    return {"test": test, "kind": kind, "ok": None, "status": "skipped", "output": "no GPU visible",
            "seconds": 0.0}


def _run_set(py: str, prefix: Path, env: dict[str, str], home: str, imports: tuple[str, ...],
             commands: tuple[str, ...], kind: str, timeout: float, log: BuildLog,
             stop: bool) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    label = "GPU " if kind else ""

    def record(test: str, ok: bool, output: str, seconds: float, **more: object) -> None:
        results.append({"test": test, "kind": kind, "ok": ok, "status": "passed" if ok else "failed",
                        "output": output, "seconds": round(seconds, 3), **more})
        if not ok:
            log.add(json.dumps(results[-1]))
            if stop:
                _fail(f"{label}{test}", output, log)

    if imports:
        t0 = time.monotonic()
        r = _run([py, "-c", _IMPORTS, *imports], env, home, timeout)
        took = time.monotonic() - t0
        if r.returncode != 0:
            record("the stack's python", False, (r.stdout + r.stderr)[-4000:], took)
            return results
        data = json.loads(r.stdout)
        if os.path.realpath(data["prefix"]) != os.path.realpath(prefix):
            record("sys.prefix", False, f"python reports sys.prefix={data['prefix']}, expected {prefix}", took)
            return results
        for name, ok, err in data["results"]:
            record(f"import {name}", ok, err, took)
    for cmd in commands:
        t0 = time.monotonic()
        r = _run(["bash", "-c", cmd], env, home, timeout)
        out = (r.stdout + r.stderr)[-4000:]
        ok = r.returncode == 0
        record(cmd, ok, out if ok else f"exit code {r.returncode}\n{out}", time.monotonic() - t0,
               returncode=r.returncode)
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


# --- `sitestack test NAME/VERSION`: rerun a published stack's tests ------------------------


@dataclass(frozen=True)
class SmokeRun:
    """One rerun of a published stack's smoke tests, as recorded in the site state."""

    stack: str
    ran: str  # ISO time, UTC
    host: str
    gpu: bool  # a GPU was visible
    gpu_how: str
    gpu_only: bool
    results: tuple[dict[str, object], ...]
    record: Path  # ROOT/.sitestack/tests/NAME/VERSION.json

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r["status"] == status)

    @property
    def ok(self) -> bool:
        """Nothing failed, and with gpu_only the GPU tests really ran."""
        return self.count("failed") == 0 and not (self.gpu_only and self.count("skipped"))

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "ran": self.ran, "host": self.host,
                "gpu": {"visible": self.gpu, "how": self.gpu_how}, "gpu_only": self.gpu_only,
                "ok": self.ok, "passed": self.count("passed"), "failed": self.count("failed"),
                "skipped": self.count("skipped"), "results": list(self.results), "record": str(self.record)}


def rerun_record(root: SiteRoot, name: str, version: str) -> Path:
    """Where reruns are recorded: the site state, never the read-only stack."""
    return root.meta / "tests" / name / f"{version}.json"


def rerun_tests(root: SiteRoot, ref: str, *, gpu_only: bool = False, log: BuildLog | None = None) -> SmokeRun:
    """Run a published stack's smoke tests again (from its own spec.toml) and record them.

    GPU tests run where a GPU is visible and are recorded as skipped elsewhere; `gpu_only`
    runs only those (a GPU job after publishing)."""
    import datetime as dt
    import socket

    from sitestack.core.fsutil import atomic_write_json, file_lock
    from sitestack.core.log import BuildLog as _Log
    from sitestack.core.records import SPEC
    from sitestack.errors import UsageError
    from sitestack.site.registry import Site
    from sitestack.site.spec import parse_spec

    rec = Site(root).get(ref)
    spec = parse_spec((rec.records / SPEC).read_text(encoding="utf-8"), source=rec.records / SPEC)
    if gpu_only and not (spec.tests.gpu_imports or spec.tests.gpu_commands):
        raise UsageError(f"{rec.ref} has no [tests.gpu] tests", hint="add a [tests.gpu] table to its spec")
    visible, how = gpu_visible()
    log = log or _Log(echo=False)
    results = run_smoke_tests(spec, rec.prefix, rec.python_xy, log, gpu=visible, stop_on_failure=False,
                              cpu=not gpu_only)
    path = rerun_record(root, rec.name, rec.version)
    run = SmokeRun(stack=rec.ref, ran=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  host=socket.gethostname(), gpu=visible, gpu_how=how, gpu_only=gpu_only,
                  results=tuple(results), record=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.locks / f"tests-{rec.name}.lock", what=f"test records of {rec.name}"):
        atomic_write_json(path, run.to_json())
    return run
