"""build.reusepyc: the source interpreter's bytecode is reused only where CPython takes it."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import subprocess
import sys
from pathlib import Path

from sitestack.build.reusepyc import reuse_bytecode
from sitestack.core.bytecode import pyc_paths

XY = f"{sys.version_info.major}.{sys.version_info.minor}"
MAGIC = importlib.util.MAGIC_NUMBER


def _pair(root: Path, rel: str, text: str, mode: py_compile.PycInvalidationMode | None = None) -> tuple[Path, Path]:
    """The same module in the source's site-packages (compiled there, an old mtime) and in
    a fresh install (not compiled, written now)."""
    src, new = root / "src" / rel, root / "new" / rel
    for p in (src, new):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    py_compile.compile(str(src), doraise=True,
                       invalidation_mode=mode or py_compile.PycInvalidationMode.TIMESTAMP)
    return src, new


def _pyc(py: Path) -> Path:
    return py.parent / pyc_paths(py.name, XY)[0]


def test_an_identical_module_gets_the_pyc_and_imports_without_a_compile(tmp_path: Path) -> None:
    src, new = _pair(tmp_path, "pkg/mod.py", "def f():\n    raise ValueError('where')\n")
    (tmp_path / "new" / "pkg" / "__init__.py").write_text("")  # no twin: left to compile
    assert reuse_bytecode(tmp_path / "new", tmp_path / "src", XY, MAGIC) == 1
    assert _pyc(new).read_bytes() == _pyc(src).read_bytes()
    assert new.stat().st_mtime_ns == src.stat().st_mtime_ns
    assert not _pyc(tmp_path / "new" / "pkg" / "__init__.py").exists()
    before = _pyc(new).read_bytes()
    # CPython takes it: a stale .pyc would be rewritten (it names the source's path, and a
    # fresh compile would name this one); the traceback names where it was imported from.
    r = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import pkg.mod; pkg.mod.f()",
                        str(tmp_path / "new")], capture_output=True, text=True)
    assert "ValueError: where" in r.stderr and f'File "{new}"' in r.stderr, r.stderr
    assert _pyc(new).read_bytes() == before


def test_a_different_source_is_not_given_the_pyc(tmp_path: Path) -> None:
    src, new = _pair(tmp_path, "m.py", "X = 1\n")
    new.write_text("X = 2\n")  # same size, other bytes
    mtime = new.stat().st_mtime_ns
    assert reuse_bytecode(tmp_path / "new", tmp_path / "src", XY, MAGIC) == 1
    assert not _pyc(new).exists() and new.stat().st_mtime_ns == mtime


def test_a_stale_hash_based_or_foreign_pyc_is_not_reused(tmp_path: Path) -> None:
    _s1, n1 = _pair(tmp_path, "stale.py", "A = 1\n")
    os.utime(tmp_path / "src" / "stale.py", (1_700_000_000, 1_700_000_000))  # touched after its compile
    _s2, n2 = _pair(tmp_path, "hashed.py", "B = 1\n", py_compile.PycInvalidationMode.CHECKED_HASH)
    _s3, n3 = _pair(tmp_path, "foreign.py", "C = 1\n")
    pyc3 = _pyc(tmp_path / "src" / "foreign.py")
    pyc3.write_bytes(b"\x00\x00\r\n" + pyc3.read_bytes()[4:])  # another interpreter's magic
    _s4, n4 = _pair(tmp_path, "ok.py", "D = 1\n")
    assert reuse_bytecode(tmp_path / "new", tmp_path / "src", XY, MAGIC) == 3
    assert [p.name for p in (n1, n2, n3, n4) if _pyc(p).exists()] == ["ok.py"]
