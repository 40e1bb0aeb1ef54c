"""Bytecode the source interpreter already wrote, reused for the stdlib's pip wheel.

The stdlib's bundled pip is the one local wheel every cold build installs, and its 491
modules are the largest cost a cold build has over a plain venv: 1.7-2.3 CPU-s to compile
on this 2-core machine, while uv's own compile of the set already keeps both cores busy.
An interpreter installed by `make install`, pyenv or python.org ran ensurepip from that
very wheel, so its site-packages holds the same files, already compiled. A module of the
wheel whose source is byte for byte the interpreter's, and whose .pyc there is valid for
that source (the interpreter's magic number, timestamp-checked, the source's mtime and
size in its header), gets a copy of that .pyc, and the wheel's .py takes the source's
mtime, which the header names. Anything else (pip upgraded in the source, no bytecode,
hash-based .pyc) is compiled as before: nothing is reused that CPython would not accept.

The .pyc is trusted as the interpreter's copied stdlib bytecode is (build/interpreter.py),
except one that others than its owner may write. It names the source's path as its code's
filename; the import system replaces that with the path the module is imported from
(importlib's `_fix_co_filename`), as it does for the temp path uv compiled the other
entries in.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from sitestack.core.bytecode import pyc_paths

_HEADER = struct.Struct("<4sIII")  # magic, flags (0: timestamp-checked), source mtime, size


def reuse_bytecode(site_packages: Path, source_site_packages: Path, py_xy: str, magic: bytes) -> int:
    """Give each .py under `site_packages` the .pyc of its identical twin under
    `source_site_packages`; returns how many .py files are still without bytecode."""
    left = 0
    top = str(site_packages)
    for d, dirs, files in os.walk(top):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(d, name)
            rel = os.path.relpath(path, top)
            if not _reuse_one(path, os.path.join(str(source_site_packages), rel),
                              os.path.join(d, pyc_paths(name, py_xy)[0]), py_xy, magic):
                left += 1
    return left


def _reuse_one(path: str, twin: str, dest_pyc: str, py_xy: str, magic: bytes) -> bool:
    try:
        st = os.stat(twin)
        if st.st_size != os.path.getsize(path):
            return False
        pyc = os.path.join(os.path.dirname(twin), pyc_paths(os.path.basename(twin), py_xy)[0])
        with open(pyc, "rb") as f:
            if os.fstat(f.fileno()).st_mode & 0o022:
                return False  # others could have written it: compiled here instead
            head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return False
        pyc_magic, flags, mtime, size = _HEADER.unpack(head)
        if (pyc_magic, flags, mtime, size) != (magic, 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF):
            return False
        with open(path, "rb") as a, open(twin, "rb") as b:
            if a.read() != b.read():
                return False
        os.makedirs(os.path.dirname(dest_pyc), exist_ok=True)
        shutil.copyfile(pyc, dest_pyc)
        # The header names the twin's mtime: ours must be the same for CPython to take it.
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError:
        return False
    return True
