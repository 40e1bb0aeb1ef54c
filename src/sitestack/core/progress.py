"""Progress of a long step: a rich bar on a terminal, one plain line per step otherwise.

A build of 8 GiB spends minutes in a few steps (installing distributions, hashing, compiling:
``--> compiled: 14867 of 14867 files, 35.0s``).
On a TTY a bar shows how far each has come; in a batch job's log, bars would be noise, so
each step writes exactly one line when it ends (``--> hashed 8.0 GiB in 67712 files, 8.1s``).
The same line always goes into the build log.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any

from sitestack.core.log import LogSink


def _human(n: float, unit: str) -> str:
    if unit != "bytes":
        return f"{int(n)}"
    for u in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or u == "GiB":
            return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class Progress:
    """Count work done in one step. Use as a context manager; `advance` is thread-safe enough
    for counters (rich's own task updates take a lock)."""

    def __init__(self, log: LogSink | None, what: str, total: int | None = None, *, unit: str = "",
                 noun: str = "", stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.log = log
        self.what = what
        self.total = total
        self.unit = unit
        self.noun = noun
        self.done = 0
        self.items = 0
        self.stream = stream or sys.stderr
        echo = bool(getattr(log, "echo", log is None))
        self.echo = echo
        self.tty = echo and (self.stream.isatty() if tty is None else tty)
        self._bar: Any = None
        self._task: Any = None
        self.t0 = time.monotonic()

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as Bar

            count = DownloadColumn() if self.unit == "bytes" else MofNCompleteColumn()
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), count, TimeElapsedColumn(),
                            transient=True, console=_console(self.stream))
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total)
        return self

    def set_total(self, total: int) -> None:
        """The amount of work once it is known (a child process counted its files)."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance(self, n: int = 1, items: int = 1) -> None:
        self.done += n
        self.items += items
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def line(self) -> str:
        took = time.monotonic() - self.t0
        amount = _human(self.done, self.unit)
        if self.unit == "bytes":
            text = f"{self.what}: {amount} in {self.items} {self.noun or 'files'}"
        elif self.total is not None:
            text = f"{self.what}: {amount} of {self.total} {self.noun}".rstrip()
        else:
            text = f"{self.what}: {amount} {self.noun}".rstrip()
        return f"{text}, {took:.1f}s"

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        text = self.line() + (" (stopped)" if exc_type is not None else "")
        if self.log is not None:
            self.log.add(text)
        if self.echo:
            print(f"--> {text}", file=self.stream, flush=True)


def _console(stream: IO[str]) -> Any:
    from rich.console import Console

    return Console(file=stream, stderr=stream is sys.stderr)
