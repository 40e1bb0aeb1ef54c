"""sitestack: dated, self-contained, read-only Python stacks for shared machines."""

from __future__ import annotations

__version__ = "0.1.0"

# typing.TYPE_CHECKING without importing typing, for every module's type-only imports:
# `from sitestack import TYPE_CHECKING` (mypy takes any TYPE_CHECKING for typing's). `import
# typing` would cost `sitestack venv` 3.4 ms of its ~30 ms CPU and a clone's start 2.6 ms
# (bench/startup.py, 60 alternating pairs; docs/benchmarks.md, 2026-12-06).
TYPE_CHECKING = False
