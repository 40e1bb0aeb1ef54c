"""The one reader and writer of ``pyvenv.cfg`` (PEP 405), read as CPython's site.py reads it.

site.py takes every line with an ``=``, splits at the first one, strips both sides and
lower-cases the key; a later line wins. Lines are split as a text file's are (``\\n``,
``\\r\\n``, ``\\r``). ``update`` edits values in place: every other line, unknown key,
comment, order and line ending stays byte for byte.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

CFG = "pyvenv.cfg"
# key = value, keeping what surrounds the value (spaces, the line ending) for in-place edits.
_LINE = re.compile(r"(?P<head>[^=]*=[ \t]*)(?P<value>.*?)(?P<tail>[ \t]*(?:\r\n|\n|\r)?)\Z", re.DOTALL)


def _lines(text: str) -> list[str]:
    """Lines with their endings, split where a text file's iteration splits them."""
    return io.StringIO(text, newline="").readlines()


def parse(text: str) -> dict[str, str]:
    """{lower-cased key: value}; the last line of a key wins."""
    out: dict[str, str] = {}
    for line in _lines(text):
        if "=" in line:
            key, _, value = line.partition("=")
            out[key.strip().lower()] = value.strip()
    return out


def read(path: Path) -> dict[str, str]:
    """Parse a pyvenv.cfg file (OSError, UnicodeDecodeError if unreadable)."""
    return parse(Path(path).read_text(encoding="utf-8"))


def dumps(items: Iterable[tuple[str, str]]) -> str:
    """A new pyvenv.cfg in the given order, as `python -m venv` writes it: ``key = value``.
    A value with a line break would add a key of its own (a venv path with a newline could
    set `home`): UsageError, exit 2 (core.shape.line_safe, the one check for config values)."""
    from sitestack.core.shape import line_safe
    from sitestack.errors import UsageError

    items = list(items)
    for k, v in items:
        if not line_safe(v):
            raise UsageError(f"{v!r} holds a line break or control character: it cannot be written into "
                             f"{CFG} as its {k}")
    return "".join(f"{k} = {v}\n" for k, v in items)


def update(text: str, values: Mapping[str, str]) -> str:
    """Set keys: the line site.py would use (the last one) gets the new value in place; a
    key not there is appended. Nothing else changes."""
    lines = _lines(text)
    last: dict[str, int] = {}
    for i, line in enumerate(lines):
        if "=" in line:
            last[line.partition("=")[0].strip().lower()] = i
    for key, value in values.items():
        at = last.get(key.lower())
        if at is None:
            if lines and not lines[-1].endswith(("\n", "\r")):
                lines[-1] += "\n"
            lines.append(f"{key} = {value}\n")
            last[key.lower()] = len(lines) - 1
            continue
        m = _LINE.match(lines[at])
        assert m is not None  # the line has an '=', so the pattern matches
        lines[at] = m["head"] + value + m["tail"]
    return "".join(lines)
