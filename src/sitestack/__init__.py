"""sitestack: dated, self-contained, read-only Python stacks for shared machines."""

from __future__ import annotations

__version__ = "0.1.0"

# typing.TYPE_CHECKING without importing typing, for every module's type-only imports:
# `from sitestack import TYPE_CHECKING` (mypy takes any TYPE_CHECKING for typing's). `import
# typing` costs 3.2-4.2 ms at start-up (-X importtime, after what `sitestack venv` imports
# anyway), about a tenth of `sitestack venv`'s own work (docs/benchmarks.md, 2026-12-06).
TYPE_CHECKING = False
