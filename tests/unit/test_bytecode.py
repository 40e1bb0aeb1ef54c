"""core.bytecode: the child compileall reports a live count of the files it compiled."""

from __future__ import annotations

import marshal
import os
import sys
from pathlib import Path

from sitestack.core.bytecode import compile_dirs, compile_paths, pyc_paths
from sitestack.core.progress import Progress

XY = f"{sys.version_info.major}.{sys.version_info.minor}"


class ListLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        self.lines.extend(text.rstrip("\n").splitlines())


def _tree(root: Path, k: int) -> list[str]:
    """K modules over nested folders (more than one batch of 64), plus what is not counted."""
    rels = [f"pkg{i % 5}/sub{i % 3}/m{i}.py" for i in range(k)]
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"X = {len(rel)}\n")
    (root / "pkg0" / "data.txt").write_text("not python\n")
    (root / "pkg0" / "__pycache__").mkdir(exist_ok=True)
    (root / "pkg0" / "__pycache__" / "stray.py").write_text("Y = 1\n")
    return rels


def test_a_compile_of_k_files_reports_k(tmp_path: Path) -> None:
    k = 150
    rels = _tree(tmp_path / "t", k)
    log = ListLog()
    with Progress(log, "compiled", noun="files") as bar:
        compile_dirs(sys.executable, [str(tmp_path / "t")], log, strip=str(tmp_path / "t"),
                     prepend="/final", progress=bar)
    assert bar.total == k and bar.done == k
    assert log.lines[-1].startswith(f"compiled: {k} of {k} files, ")
    for rel in rels:
        pyc = tmp_path / "t" / pyc_paths(rel, XY)[0]
        code = marshal.loads(pyc.read_bytes()[16:])
        assert code.co_filename == os.path.join("/final", rel)  # -s/-p: the final path is recorded


def test_files_by_name_and_an_exclude_are_counted_as_compileall_treats_them(tmp_path: Path) -> None:
    rels = _tree(tmp_path, 70)
    (tmp_path / "bad.py").write_text("def (:\n")
    files = [str(tmp_path / r) for r in rels] + [str(tmp_path / "bad.py"), str(tmp_path / "pkg0" / "data.txt")]
    with Progress(None, "compiled", noun="files", tty=False) as bar:
        bar.echo = False
        r = compile_paths(sys.executable, files, exclude=r"m1\d*\.py$", progress=bar)
    excluded = [f for f in rels if os.path.basename(f).startswith("m1")]
    assert bar.total == bar.done == 70 - len(excluded) + 1  # + bad.py; data.txt is not a module
    assert r.returncode == 1 and "bad.py" in r.stdout  # a file that does not compile: exit 1, named
    assert not (tmp_path / pyc_paths(excluded[0], XY)[0]).exists()
    assert (tmp_path / pyc_paths(rels[0], XY)[0]).exists()


def test_without_progress_the_same_compile_runs(tmp_path: Path) -> None:
    rels = _tree(tmp_path, 3)
    r = compile_paths(sys.executable, [str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert all((tmp_path / pyc_paths(rel, XY)[0]).exists() for rel in rels)
    assert not (tmp_path / "pkg0" / "__pycache__" / "__pycache__").exists()  # __pycache__ is not walked
