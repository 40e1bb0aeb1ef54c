"""'#!' lines the kernel cannot run, made portable (the sh trick pip and uv use).

Its own module, importing nothing: `sitestack venv` writes pip scripts with it, and its
start-up time is benchmarked (core.relocate, which also uses it, costs dataclasses).
"""

from __future__ import annotations

# Linux reads at most this much of a '#!' line on older kernels (BINPRM_BUF_SIZE).
MAX_SHEBANG = 127


def fix_shebang(data: bytes) -> bytes:
    """Make a '#!' line to a python the kernel cannot run (too long, or a path with a space)
    portable with the sh trick pip and uv use."""
    if not data.startswith(b"#!"):
        return data
    end = data.find(b"\n")
    line = data[2:end if end >= 0 else len(data)].strip()
    last = line.rsplit(b"/", 1)[-1]
    # `#!/usr/bin/env python3` or `#!.../python -E`: arguments, not a path; leave it be.
    if not line.startswith(b"/") or not last.startswith(b"python") or b" " in last:
        return data
    if len(line) + 2 <= MAX_SHEBANG and not any(c in line for c in b" \t"):
        return data
    rest = data[end + 1 :] if end >= 0 else b""
    return b"#!/bin/sh\n'''exec' " + _shquote(line) + b' "$0" "$@"\n' + b"' '''\n" + rest


def _shquote(b: bytes) -> bytes:
    if all(c not in b for c in b" '\"$`\\"):
        return b
    return b"'" + b.replace(b"'", b"'\\''") + b"'"
