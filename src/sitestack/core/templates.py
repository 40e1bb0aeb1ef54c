"""Text templates shipped as package data, rendered with one quoting rule per language.

A template is a file in a subpackage's ``templates/`` folder (``sitestack/user/templates/
clone-activate.sh``) with placeholders written ``__NAME__`` (upper case, digits, single
underscores). ``render`` replaces every placeholder in one pass with its value passed
through the quote function of the template's language, so a value can never end or bend
the string it sits in, and a value that itself contains ``__X__`` is not expanded again.
The model is virtualenv's ``activation/via_template.py``.

Strict both ways: a placeholder without a value, or a value no placeholder uses, is a
programming error (ValueError), so a template and its caller cannot drift apart silently.
Values never go into comments: no quoting makes a newline safe there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

PLACEHOLDER = re.compile(r"__([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)__")
_SH_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)


def sh_quote(s: str) -> str:
    """One POSIX-sh word (bash, zsh, dash): as ``shlex.quote`` does it."""
    if s and _SH_SAFE.fullmatch(s):
        return s
    return "'" + s.replace("'", "'\"'\"'") + "'"


def lua_quote(s: str) -> str:
    """A Lua string literal: every byte that could end or bend the string is escaped."""
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03d}")
        elif ord(ch) > 127:
            # Decimal byte escapes keep the file pure ASCII, whatever the locale.
            out.extend(f"\\{b:03d}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def tcl_quote(s: str) -> str:
    """A Tcl double-quoted word with no substitution left in it; pure ASCII."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '\\"$[]{}':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 32 or o == 127:
            out.append(f"\\x{o:02x}")
        elif o > 0xFFFF:
            # Tcl 8.6 strings are UTF-16 inside: \U escapes are lost, surrogate pairs work.
            o -= 0x10000
            out.append(f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}")
        elif o > 127:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


QUOTE: dict[str, Callable[[str], str]] = {"sh": sh_quote, "lua": lua_quote, "tcl": tcl_quote}
# A template's language from its file name's suffix.
SUFFIX = {".sh": "sh", ".lua": "lua", ".tcl": "tcl"}


def placeholders(text: str) -> set[str]:
    return {m.group(1) for m in PLACEHOLDER.finditer(text)}


def render(text: str, values: Mapping[str, str], language: str,
           raw: Mapping[str, str] | None = None) -> str:
    """`text` with every ``__NAME__`` replaced by ``quote(values[NAME])``, in one pass.

    ``raw`` values are text the caller has already built from quoted values (a list of
    lines, another rendered template) and go in as they are; an empty raw value standing
    alone on its line removes that line, so optional blocks leave no blank line behind.
    """
    quote = QUOTE[language]
    raw = raw or {}
    used = placeholders(text)
    given = set(values) | set(raw)
    missing, unused = used - given, given - used
    if missing or unused or set(values) & set(raw):
        raise ValueError(f"template placeholders without values: {sorted(missing)}; "
                         f"values without placeholders: {sorted(unused)}; "
                         f"both quoted and raw: {sorted(set(values) & set(raw))}")
    quoted = {k: quote(v) for k, v in values.items()} | dict(raw)
    empty = [k for k, v in raw.items() if not v]
    if empty:
        # In the same single pass: a whole line holding only an empty raw placeholder goes.
        alone = "|".join(re.escape(k) for k in empty)
        pattern = re.compile(rf"^[ \t]*__(?:{alone})__[ \t]*\n|{PLACEHOLDER.pattern}", re.M)
        return pattern.sub(lambda m: quoted[m.group(1)] if m.group(1) else "", text)
    return PLACEHOLDER.sub(lambda m: quoted[m.group(1)], text)


def load(package: str, name: str) -> str:
    """The text of ``templates/NAME`` in the (sub)package ``package``, e.g. ``sitestack.user``.

    Read beside the package's own ``__init__.py``: sitestack is installed as files (from its
    wheel, or editable), and importlib.resources cost a clone 7 ms of imports (tempfile,
    random, shutil, bz2, lzma) to find the same path."""
    import os
    import sys

    mod = sys.modules.get(package)
    if mod is None:  # callers name their own package, imported already
        import importlib

        mod = importlib.import_module(package)
    with open(os.path.join(os.path.dirname(str(mod.__file__)), "templates", name), encoding="utf-8") as f:
        return f.read()


def render_file(package: str, name: str, values: Mapping[str, str],
                raw: Mapping[str, str] | None = None) -> str:
    """Load a template and render it in the language its suffix names (.sh, .lua, .tcl)."""
    suffix = name[name.rfind("."):] if "." in name else ""
    if suffix not in SUFFIX:
        raise ValueError(f"template {name}: no language for suffix {suffix!r}")
    return render(load(package, name), values, SUFFIX[suffix], raw)
