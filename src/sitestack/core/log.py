"""The one build log: step lines for people, full text for ``.sitestack/build.log``.

Every long operation (build, package cache, smoke tests, conda install, uv runs) writes to a
``BuildLog``; a function that only appends output takes the narrower ``LogSink``.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, runtime_checkable


class LogSink(Protocol):
    """Anything that keeps tool output: a ``BuildLog``, or a test's list-backed fake."""

    def add(self, text: str) -> None: ...


@runtime_checkable
class StepLog(LogSink, Protocol):
    def step(self, msg: str) -> None: ...


class BuildLog:
    """Collects everything for .sitestack/build.log and echoes step lines to stderr."""

    def __init__(self, echo: bool = True) -> None:
        self.lines: list[str] = []
        self.echo = echo
        self.t0 = time.monotonic()

    def step(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {msg}"
        self.lines.append(line)
        if self.echo:
            print(f"==> {msg}", file=sys.stderr, flush=True)

    def add(self, text: str) -> None:
        self.lines.extend(text.rstrip("\n").splitlines())

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
