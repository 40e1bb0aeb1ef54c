"""Reading back what sitestack wrote: a record's shape is checked before anything acts on it.

A record on disk (a layer's `requested.json`, an install journal, a retired version's
`retired.json`, a kept `manifest.json` or `spec.toml`) or in the environment
(`_SITESTACK_SAVED`) may have been changed by hand, by a bug, or by another user. Every
reader of one is built from a `Shape`: it names the record once, and each deviation (not a
file, not UTF-8, not JSON, a string where a list belongs, a key missing) becomes one error
line of the reader's class, so of its exit code, that names the record and the key. No
caller meets a KeyError, a TypeError, or a string read character by character.

`line_safe` is the one check for a value that is written into a config file (a layer's
`pip.conf`) or a modulefile, where a line break would start a line of its own.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.errors import SitestackError, VerifyError

if TYPE_CHECKING:
    from typing import Any, NoReturn

# Line breaks in every sense a reader may take them: C0 controls but tab (\n, \r, \v, \f,
# the file/group/record separators str.splitlines() splits at), DEL, C1 controls (NEL),
# and the Unicode line and paragraph separators.
_BREAKS = frozenset([*map(chr, range(0, 9)), *map(chr, range(10, 32)), *map(chr, range(127, 160)),
                     "\u2028", "\u2029"])


def line_safe(value: str) -> bool:
    """Whether `value` stays on its line in any config or modulefile: no line break, NUL
    or other control character (a tab is fine)."""
    return not any(c in _BREAKS for c in value)


class Shape:
    """A reader's view of one record: `what` names it in every error, `error` is its class."""

    def __init__(self, what: str, error: type[SitestackError] = VerifyError, hint: str | None = None) -> None:
        self.what = what
        self.error = error
        self.hint = hint

    def fail(self, problem: str) -> NoReturn:
        raise self.error(f"{self.what}: {problem}", hint=self.hint)

    def text_file(self, path: Path) -> str:
        """The UTF-8 text of a regular file (`data_file`)."""
        data = self.data_file(path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"not UTF-8 text (byte {e.start})")

    def data_file(self, path: Path) -> bytes:
        """The bytes of a regular file (a folder, a FIFO or a device is refused without being
        opened: opening a FIFO would wait for a writer)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.fail("missing")
        except OSError as e:
            self.fail(f"cannot be read ({e.strerror})")
        if not stat.S_ISREG(st.st_mode):
            self.fail("not a file" + (" (a folder)" if stat.S_ISDIR(st.st_mode) else ""))
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            self.fail(f"cannot be read ({e.strerror})")

    def json_file(self, path: Path) -> Any:
        return self.json_text(self.text_file(path))

    def json_text(self, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError as e:
            self.fail(f"not valid JSON ({e})")
        except RecursionError:  # [[[[...]]]] nested deeper than the parser recurses
            self.fail("not valid JSON (nested too deep)")

    def table(self, value: Any, key: str = "") -> dict[str, Any]:
        """A JSON object (a dict with string keys)."""
        if not isinstance(value, dict):
            self.fail(f"{self._at(key)}must be a table (a JSON object), not {_kind(value)}")
        return value

    def text(self, value: Any, key: str, *, one_line: bool = True) -> str:
        if not isinstance(value, str):
            self.fail(f"{self._at(key)}must be a string, not {_kind(value)}")
        if one_line and not line_safe(value):
            self.fail(f"{self._at(key)}must not hold a line break or control character")
        return value

    def texts(self, value: Any, key: str, *, one_line: bool = True) -> tuple[str, ...]:
        """A list of strings (one-line ones unless told); a string where the list belongs is
        refused, not read character by character."""
        if not isinstance(value, list):
            self.fail(f"{self._at(key)}must be a list of strings, not {_kind(value)}")
        return tuple(self.text(v, f"{key}[{i}]", one_line=one_line) for i, v in enumerate(value))

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(f"{self._at(key)}must be true or false, not {_kind(value)}")
        return value

    @staticmethod
    def _at(key: str) -> str:
        return f"{key}: " if key else ""


def _kind(value: object) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
