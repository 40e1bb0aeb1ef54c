"""A few threads for the clone's copy engines: ThreadPoolExecutor's submit, result and
shutdown, without concurrent.futures.

Importing concurrent.futures imports logging: about 8 ms of `sitestack clone`'s start
here, whose whole run is benchmarked against `cp -al` (0.4 s for a small stack). The copy
engines (core/copytree.py) need no more than this: calls run in submission order by up to
`workers` threads, each call's result or exception comes back from `Task.result()`, and a
shutdown may drop what has not started.
"""

from __future__ import annotations

import os
import threading
from collections import deque

from sitestack import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Task:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._value = self.fn(*self.args)
        except BaseException as e:  # handed to result(), as a Future does
            self._error = e
        self._done.set()

    def _cancel(self) -> None:
        # No class of its own (errors.py holds the one hierarchy): nothing reads the result
        # of a task it dropped, since a shutdown with cancel only follows an error.
        self._error = RuntimeError("dropped by shutdown(cancel=True) before it started")
        self._done.set()

    def result(self) -> Any:
        """The call's return value, once it ran; its exception is raised here."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class Pool:
    """Up to `workers` threads, started as tasks arrive; `with` waits for every task."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._todo: deque[Task | None] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Task:
        task = Task(fn, args)
        with self._cond:
            if self._closed:
                raise RuntimeError("submit after shutdown")
            self._todo.append(task)
            if self._idle == 0 and len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name=f"sitestack-pool-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            self._cond.notify()
        return task

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._todo:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                task = self._todo.popleft()
                if task is None:  # the end: leave it for the next thread
                    self._todo.appendleft(None)
                    self._cond.notify()
                    return
            task._run()

    def shutdown(self, wait: bool = True, cancel: bool = False) -> None:
        """No more tasks; with `cancel`, those not started are dropped (their result()
        raises RuntimeError); with `wait`, returns once every thread is done."""
        with self._cond:
            if not self._closed:
                self._closed = True
                if cancel:
                    while self._todo:
                        dropped = self._todo.popleft()
                        if dropped is not None:
                            dropped._cancel()
                self._todo.append(None)
                self._cond.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (a batch job's share of a node),
    not the node's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
