"""core.pool: what the copy engines take from ThreadPoolExecutor, without concurrent.futures."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sitestack
from sitestack.core.pool import Pool


def test_results_come_back_in_submission_order_from_several_threads() -> None:
    names: set[str] = set()
    gate = threading.Barrier(3, timeout=10)  # three tasks running at once: three threads

    def work(i: int) -> int:
        names.add(threading.current_thread().name)
        if i < 3:
            gate.wait()
        return i * i

    with Pool(3) as pool:
        tasks = [pool.submit(work, i) for i in range(50)]
        assert [t.result() for t in tasks] == [i * i for i in range(50)]
    assert len(names) == 3


def test_an_exception_is_raised_by_result_and_the_rest_still_run() -> None:
    def work(i: int) -> int:
        if i == 2:
            raise ValueError("task 2")
        return i

    with Pool(2) as pool:
        tasks = [pool.submit(work, i) for i in range(5)]
        with pytest.raises(ValueError, match="task 2"):
            tasks[2].result()
        assert [tasks[i].result() for i in (0, 1, 3, 4)] == [0, 1, 3, 4]


def test_shutdown_with_cancel_drops_what_has_not_started_and_waits_for_the_rest() -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[int] = []

    def slow(i: int) -> int:
        started.set()
        release.wait(10)
        ran.append(i)
        return i

    pool = Pool(1)
    first = pool.submit(slow, 0)
    rest = [pool.submit(slow, i) for i in range(1, 4)]
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    t0 = time.monotonic()
    pool.shutdown(wait=True, cancel=True)
    assert time.monotonic() - t0 >= 0.15  # it waited for the running task
    assert first.result() == 0 and ran == [0]
    for t in rest:
        with pytest.raises(RuntimeError, match="before it started"):
            t.result()
    with pytest.raises(RuntimeError):
        pool.submit(slow, 9)


def test_a_clone_starts_without_concurrent_futures_typing_or_argparse() -> None:
    """What the pool is for: copytree (and the clone) start without concurrent.futures and logging."""
    code = ("import sys, sitestack.core.copytree, sitestack.user.clone; "
            "print(sorted(m for m in ('concurrent.futures', 'logging', 'typing', 'argparse') if m in sys.modules))")
    src = str(Path(sitestack.__file__).parents[1])
    # -S: no site-packages, whose .pth files (an editable install's finder) import typing.
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
