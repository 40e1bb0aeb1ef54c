"""Smoke tests: run with the new stack's own python, in a clean environment.

At build time a failure stops the build; `sitestack test` reruns them on a published stack
(e.g. in a GPU job) and records the results under ROOT/.sitestack/tests, never in the stack.
The test processes run side by side (one per CPU, `smoke_width`); results and the failure
reported keep the spec's order. Past 400 lines because the runner (order, cancel, kill of
a test's own children) sits with the tests it runs and with their `sitestack test` record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack import TYPE_CHECKING
from sitestack.core.pool import usable_cpus
from sitestack.errors import SmokeTestError, UsageError

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


def smoke_width(jobs: int, *, one_device: bool = False) -> int:
    """How many test processes run at once: one per CPU this process may use.

    Each test is a python process that spends its time importing (unmarshalling bytecode,
    loading extension modules): CPU-bound, so more processes than CPUs only take turns, and
    each holds its frameworks in memory (torch with tensorflow is 1-2 GiB). The CPUs are the
    affinity mask (a batch job's share of a node), not the node's count. With `one_device`
    (GPU tests run) it is 1: jax takes 75% of a GPU's memory when it starts and tensorflow
    nearly all of it, so GPU tests side by side would fail each other. SITESTACK_SMOKE_JOBS=N
    sets the width either way (1: one after another, for tests that cannot share a machine).
    """
    raw = os.environ.get("SITESTACK_SMOKE_JOBS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError(f"SITESTACK_SMOKE_JOBS={raw!r} is not a positive whole number")
        width = int(raw)
    elif one_device:
        width = 1
    else:
        width = usable_cpus()
    return max(1, min(width, jobs))


@dataclass(frozen=True)
class _Job:
    """One test process: a set's imports (all in one python), or one command."""

    index: int  # spec order over every set: results and the reported failure follow it
    kind: str  # "" or "gpu"
    first: int  # index of this set's first job: an import job that cannot start drops the set
    imports: tuple[str, ...] = ()
    command: str | None = None


@dataclass
class _Outcome:
    results: list[dict[str, object]]
    fatal: bool = False  # the set's python did not run: its commands are not recorded (as before)

    @property
    def failed(self) -> bool:
        return any(r["status"] == "failed" for r in self.results)


def run_smoke_tests(spec: StackSpec, prefix: Path, py_xy: str, log: BuildLog, *,
                    gpu: bool | None = None, stop_on_failure: bool = True,
                    cpu: bool = True, scratch: tuple[Path, str] | None = None,
                    expected: Mapping[str, float] | None = None) -> list[dict[str, object]]:
    """Run the spec's tests with the prefix's python. Each result has `status`: passed,
    failed or skipped (`ok` is null for a skipped one: never counted as passed).

    [tests.gpu] runs only where `gpu` (default: gpu_visible()) is true; elsewhere each of its
    tests is recorded as skipped. With `stop_on_failure` the first failure in spec order
    raises SmokeTestError (a build); without, every test runs and the failures are in the
    results.

    The test processes run side by side (smoke_width), each in its own working folder under
    one temp HOME; results come back in spec order whatever order they finish in. When a test
    fails with `stop_on_failure`, the tests after it are cancelled (their processes killed)
    and the ones before it run to the end, so the failure reported is always the first in
    spec order, as if they had run one after another. Where a GPU is visible (and GPU tests,
    if any, run), everything runs one at a time: jax and tensorflow each claim most of a
    GPU's memory when they start.

    `scratch` (folder, name prefix) puts the temp HOME there instead of the system's temp
    folder: a build puts it beside its temp prefix, so the next build of the name clears it
    when this one was killed (a TemporaryDirectory in /tmp would stay forever).

    `expected` (test -> seconds, from an earlier run: `durations`) starts the slowest tests
    first, so the last ones to finish are short and every CPU stays busy to the end (the
    one process that imports torch, tensorflow and jax, then the commands that import one
    of them); a test it does not know starts first, and without it they start in spec order.
    """
    py = str(prefix / "bin" / f"python{py_xy}")
    t = spec.tests
    if gpu is None and (t.gpu_imports or t.gpu_commands):
        gpu, why = gpu_visible()
        log.add(f"GPU tests: {'run' if gpu else 'skipped'} ({why})")
    sets: list[tuple[str, tuple[str, ...], tuple[str, ...], bool]] = []
    if cpu:
        sets.append(("", ("pip", *t.imports), t.commands, True))
    if t.gpu_imports or t.gpu_commands:
        sets.append(("gpu", t.gpu_imports, t.gpu_commands, bool(gpu)))
    # Each result slot in spec order: a skipped test's records, or the job that makes them.
    slots: list[list[dict[str, object]] | _Job] = []
    jobs: list[_Job] = []
    for kind, imports, commands, run in sets:
        if not run:
            slots.append([_skipped(f"import {m}", kind) for m in imports] + [_skipped(c, kind) for c in commands])
            continue
        first = len(jobs)
        if imports:
            jobs.append(_Job(len(jobs), kind, first, imports=imports))
        jobs += [_Job(len(jobs) + n, kind, first, command=c) for n, c in enumerate(commands)]
        slots += jobs[first:]
    one_device = bool(gpu) and any(j.kind == "gpu" for j in jobs)
    if not one_device and gpu is None and len(jobs) > 1 and "SITESTACK_SMOKE_JOBS" not in os.environ:
        # No [tests.gpu], but a GPU is there: plain tests that compute with jax or
        # tensorflow land on it too, and side by side they would claim its memory twice.
        one_device, why = gpu_visible()
        if one_device:
            log.add(f"a GPU is visible ({why}): smoke tests run one at a time")
    width = smoke_width(len(jobs), one_device=one_device)
    t0 = time.monotonic()
    with _home(scratch) as home:
        env = clean_env(prefix, home)

        def run_one(job: _Job, cancel: threading.Event) -> _Outcome | None:
            return _run_job(job, py, prefix, env, home, t.timeout, cancel)

        order = _slowest_first(jobs, expected)
        if order != jobs:
            log.add("started the slowest first (by an earlier run's times): "
                    + "; ".join(j.command[:40] if j.command else f"import {', '.join(j.imports)}"[:40] for j in order))
        outcomes = _run_jobs(order, width, run_one, stop_on_failure)
    results: list[dict[str, object]] = []
    dropped: set[int] = set()  # sets whose python did not start
    for slot in slots:
        if isinstance(slot, list):
            results += slot
            continue
        out = outcomes[slot.index]
        if out is None or slot.first in dropped:
            continue  # cancelled: only after a failure that is reported first, or a dropped set
        for r in out.results:
            results.append(r)
            if r["status"] == "failed":
                log.add(json.dumps(r))
                if stop_on_failure:
                    _fail(f"{'GPU ' if slot.kind else ''}{r['test']}", str(r["output"]), log)
        if out.fatal:
            dropped.add(slot.first)
    passed = sum(1 for r in results if r["status"] == "passed")
    skipped = sum(1 for r in results if r["status"] == "skipped")
    log.add(f"{passed} smoke test(s) passed" + (f", {skipped} skipped" if skipped else "")
            + f" ({len(jobs)} process(es), {width} at a time, {time.monotonic() - t0:.1f}s)")
    return results


@contextlib.contextmanager
def _home(scratch: tuple[Path, str] | None) -> Iterator[str]:
    """The smoke tests' temp HOME (see run_smoke_tests), removed at the end."""
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="sitestack-smoke-") as home:
            yield home
        return
    from sitestack.core.fsutil import rmtree
    from sitestack.core.publish import make_temp

    made = make_temp(*scratch, 0o700)
    try:
        yield str(made)
    finally:
        rmtree(made)


def _skipped(test: str, kind: str) -> dict[str, object]:
    return {"test": test, "kind": kind, "ok": None, "status": "skipped", "output": "no GPU visible",
            "seconds": 0.0}


def _result(test: str, kind: str, ok: bool, output: str, seconds: float, **more: object) -> dict[str, object]:
    return {"test": test, "kind": kind, "ok": ok, "status": "passed" if ok else "failed",
            "output": output, "seconds": round(seconds, 3), **more}


def durations(records: Path) -> dict[str, float]:
    """test -> seconds of the tests that ran in a tests.json record (build's, or a rerun's);
    empty if it is missing or not of that shape (only an order hint: see run_smoke_tests)."""
    from sitestack.core.records import TESTS

    try:
        with open(records / TESTS, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    out: dict[str, float] = {}
    for r in data if isinstance(data, list) else ():
        if (isinstance(r, dict) and isinstance(r.get("test"), str) and r.get("status") in ("passed", "failed")
                and isinstance(r.get("seconds"), int | float)):
            out[r["test"]] = float(r["seconds"])
    return out


def last_durations(root: SiteRoot, name: str) -> dict[str, float]:
    """`durations` of the newest published version of `name`: the next dated version of a
    stack mostly runs the same tests."""
    from sitestack.core.layout import newest_records

    rec = newest_records(root, name)
    return durations(rec) if rec is not None else {}


def _slowest_first(jobs: list[_Job], expected: Mapping[str, float] | None) -> list[_Job]:
    """The jobs in the order they start: the slowest known first (unknown ones first of all),
    spec order among equals. An import job took what its slowest import result says (each
    of its results carries the whole process's time)."""
    if not expected:
        return jobs

    def took(job: _Job) -> float:
        tests = [job.command] if job.command is not None else [f"import {m}" for m in job.imports]
        known = [expected[t] for t in tests if t in expected]
        return max(known) if len(known) == len(tests) else float("inf")

    return sorted(jobs, key=lambda j: (-took(j), j.index))


def _run_jobs(jobs: list[_Job], width: int, run_one: Callable[[_Job, threading.Event], _Outcome | None],
              stop: bool) -> list[_Outcome | None]:
    """Run every job on `width` threads (each waits on its own process), starting them in the
    order given; returns the outcomes by job index (None: cancelled).

    A failure (with `stop`) cancels the jobs after it in spec order; an import job whose
    python did not start cancels its own set's commands. Jobs before a failure always finish:
    one of them may fail too, and that one is reported."""
    outcomes: list[_Outcome | None] = [None] * len(jobs)
    cancel = [threading.Event() for _ in jobs]
    by_index = sorted(jobs, key=lambda j: j.index)
    first_bad = len(jobs)
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="smoke") as pool:
        futures = {pool.submit(run_one, j, cancel[j.index]): j for j in jobs}
        try:
            for fut in as_completed(futures):
                job = futures[fut]
                out = outcomes[job.index] = fut.result()
                if out is None:
                    continue
                if out.fatal:
                    for j in by_index[job.index + 1:]:
                        if j.first == job.first:
                            cancel[j.index].set()
                if stop and out.failed and job.index < first_bad:
                    first_bad = job.index
                    for e in cancel[first_bad + 1:]:
                        e.set()
        except BaseException:
            for e in cancel:  # an error or ^C here: stop every test before the pool waits for them
                e.set()
            raise
    return outcomes


def _run_job(job: _Job, py: str, prefix: Path, env: dict[str, str], home: str, timeout: float,
             cancel: threading.Event) -> _Outcome | None:
    # Its own working folder: tests that write t.h5 or p.png side by side do not collide.
    cwd = os.path.join(home, f"test-{job.index}")
    os.mkdir(cwd)
    t0 = time.monotonic()
    if job.command is None:
        r = _run([py, "-c", _IMPORTS, *job.imports], env, cwd, timeout, cancel)
        if r is None:
            return None
        took = time.monotonic() - t0
        if r.returncode != 0:
            return _Outcome([_result("the stack's python", job.kind, False, (r.stdout + r.stderr)[-4000:], took)], True)
        data = json.loads(r.stdout)
        if os.path.realpath(data["prefix"]) != os.path.realpath(prefix):
            return _Outcome([_result("sys.prefix", job.kind, False,
                                     f"python reports sys.prefix={data['prefix']}, expected {prefix}", took)], True)
        return _Outcome([_result(f"import {name}", job.kind, ok, err, took) for name, ok, err in data["results"]])
    r = _run(["bash", "-c", job.command], env, cwd, timeout, cancel)
    if r is None:
        return None
    out = (r.stdout + r.stderr)[-4000:]
    ok = r.returncode == 0
    return _Outcome([_result(job.command, job.kind, ok, out if ok else f"exit code {r.returncode}\n{out}",
                             time.monotonic() - t0, returncode=r.returncode)])


def _run(cmd: list[str], env: dict[str, str], cwd: str, timeout: float,
         cancel: threading.Event | None = None) -> subprocess.CompletedProcess[str] | None:
    """Run one test; None if `cancel` was set first. A timeout or a cancel kills what it
    started too (a `bash -c` command's python), not just the shell. It stays in the builder's
    process group, so ^C or a batch system's signal to the group still reaches it; no stdin:
    tests side by side must not read the builder's terminal."""
    if cancel is not None and cancel.is_set():
        return None
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            # Short waits so a cancel is seen soon; communicate keeps what it read so far.
            out, err = p.communicate(timeout=max(0.01, min(0.25, deadline - time.monotonic())))
            return subprocess.CompletedProcess(cmd, p.returncode, out, err)
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                _kill(p)
                return None
            if time.monotonic() >= deadline:
                out, _err = _kill(p)
                return subprocess.CompletedProcess(cmd, 124, out, f"timed out after {timeout:.0f}s")


def _kill(p: subprocess.Popen[str]) -> tuple[str, str]:
    for pid in [p.pid, *_descendants(p.pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    try:
        out, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # something left the session and holds the pipes
        p.kill()
        return "", ""
    return out or "", err or ""


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (empty where there is none)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


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
    from sitestack.core.shape import Shape
    from sitestack.errors import UsageError, VerifyError
    from sitestack.site.registry import Site
    from sitestack.site.spec import parse_spec

    rec = Site(root).get(ref)
    spec_text = Shape(f"{rec.ref}: its {rec.records / SPEC}", VerifyError).text_file(rec.records / SPEC)
    spec = parse_spec(spec_text, source=rec.records / SPEC)
    if gpu_only and not (spec.tests.gpu_imports or spec.tests.gpu_commands):
        raise UsageError(f"{rec.ref} has no [tests.gpu] tests", hint="add a [tests.gpu] table to its spec")
    visible, how = gpu_visible()
    log = log or _Log(echo=False)
    results = run_smoke_tests(spec, rec.prefix, rec.python_xy, log, gpu=visible, stop_on_failure=False,
                              cpu=not gpu_only, expected=durations(rec.records))
    path = rerun_record(root, rec.name, rec.version)
    run = SmokeRun(stack=rec.ref, ran=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  host=socket.gethostname(), gpu=visible, gpu_how=how, gpu_only=gpu_only,
                  results=tuple(results), record=path)
    root.make_folder(path.parent)  # exact modes (0755) on every level, whatever the umask; no link out
    with file_lock(root.locks / f"tests-{rec.name}.lock", what=f"test records of {rec.name}"):
        atomic_write_json(path, run.to_json())
    return run
