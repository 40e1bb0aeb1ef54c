"""sitestack: dated, self-contained, read-only Python stacks for shared machines."""

from __future__ import annotations

__version__ = "0.1.0"
