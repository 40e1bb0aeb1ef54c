"""Output: JSON for scripts, rich tables on a TTY, plain aligned text otherwise."""

from __future__ import annotations

import json
import sys

from sitestack import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


_warned: set[str] = set()


def warn(message: str) -> None:
    """One `sitestack: warning: ...` line on stderr: something was left alone, the command goes
    on. Each message once per process (a record read again says the same)."""
    if message not in _warned:
        _warned.add(message)
        print(f"sitestack: warning: {message}", file=sys.stderr)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(*headers, title=title)
        for r in rows:
            t.add_row(*(str(c) for c in r))
        Console().print(t)
        return
    if title:
        print(title)
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
