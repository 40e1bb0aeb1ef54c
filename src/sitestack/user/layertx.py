"""Move a staged install into a layer as one undoable step (a journal of renames).

`sitestack install` has uv install into a throw-away venv (the stage) beside the layer, so
uv never writes into the layer itself. This module then moves the staged files in by rename
(same filesystem; a new top-level folder moves in one rename), moving aside first whatever it
replaces: the files of a layer distribution being replaced, and any file in the way. Every
step is written to a journal *before* it is done and each undo step is idempotent, so
`rollback` restores the layer's distributions exactly, after an error, a refusal by `check`,
or (on the next install, which finds the journal) a kill -9.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

JOURNAL = "journal.jsonl"
DONE = "done"


class Tx:
    """One install's changes to `layer`; `work` (beside the layer) holds journal and backups."""

    def __init__(self, layer: Path, work: Path) -> None:
        self.layer = layer
        self.work = work
        self.backup = work / "backup"
        self._n = 0
        self._log: IO[str] = open(work / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115

    def _note(self, kind: str, target: Path, aside: Path | None = None) -> None:
        self._log.write(json.dumps({"k": kind, "t": str(target), "a": str(aside) if aside else None}) + "\n")
        self._log.flush()  # in the kernel before the step: survives kill -9 (not power loss)

    def move_aside(self, path: Path) -> None:
        """Move one file or link of the layer into the backup."""
        self._n += 1
        aside = self.backup / str(self._n)
        self.backup.mkdir(exist_ok=True)
        self._note("aside", path, aside)
        os.rename(path, aside)

    def remove_files(self, files: Iterable[Path]) -> None:
        """Move these files aside, then folders they leave empty (a distribution's uninstall)."""
        dirs: set[Path] = set()
        for f in files:
            if os.path.lexists(f) and not (f.is_dir() and not f.is_symlink()):
                self.move_aside(f)
                dirs.add(f.parent)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            while d != self.layer and d.is_relative_to(self.layer) and d.is_dir() and not any(d.iterdir()):
                self._note("rmdir", d)
                os.rmdir(d)
                d = d.parent

    def merge(self, src: Path, dst: Path, skip: set[Path]) -> None:
        """Move everything under `src` (the stage) not in `skip` to the same place under `dst`."""
        for entry in sorted(os.listdir(src)):
            s, d = src / entry, dst / entry
            if s in skip:
                if s.is_dir() and not s.is_symlink() and d.is_dir():
                    self.merge(s, d, skip)
                continue
            s_dir = s.is_dir() and not s.is_symlink()
            if os.path.lexists(d):
                if s_dir and d.is_dir() and not d.is_symlink():
                    self.merge(s, d, skip)
                    continue
                if d.is_dir() and not d.is_symlink():
                    raise OSError(f"{d} is a folder; the new file of that name cannot replace it")
                self.move_aside(d)
            self._note("added", d, s)
            os.rename(s, d)

    def write_file(self, path: Path, data: bytes) -> None:
        """Replace (or create) a small file, undoably."""
        from sitestack.core.fsutil import atomic_write_bytes

        if os.path.lexists(path):
            self._n += 1
            aside = self.backup / str(self._n)
            self.backup.mkdir(exist_ok=True)
            self._note("copied", path, aside)
            aside.write_bytes(path.read_bytes())
        else:
            self._note("created", path)
        atomic_write_bytes(path, data)

    def commit(self) -> None:
        self._log.write(DONE + "\n")
        self._log.close()

    def rollback(self) -> None:
        self._log.close()
        rollback(self.work)


def rollback(work: Path) -> bool:
    """Undo a journal's steps, newest first; False when the install had finished (nothing to undo)."""
    from sitestack.core.fsutil import rmtree

    try:
        lines = (work / JOURNAL).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return False
    if lines and lines[-1] == DONE:
        return False
    for line in reversed(lines):
        try:
            step = json.loads(line)
        except ValueError:
            continue  # a torn last line: that step never started
        t, a = Path(step["t"]), Path(step["a"]) if step["a"] else None
        kind = step["k"]
        if kind == "added" and os.path.lexists(t) and a is not None and not os.path.lexists(a):
            if t.is_dir() and not t.is_symlink():
                rmtree(t)
            else:
                os.unlink(t)
        elif kind in ("aside", "copied") and a is not None and os.path.lexists(a):
            t.parent.mkdir(parents=True, exist_ok=True)
            if kind == "copied" and os.path.lexists(t):
                os.unlink(t)
            os.rename(a, t)
        elif kind == "created" and os.path.lexists(t):
            os.unlink(t)
        elif kind == "rmdir" and not os.path.lexists(t):
            os.makedirs(t, exist_ok=True)
    return True


def recover(layer: Path) -> None:
    """Undo what a killed install left half-done, then drop its folder (the caller holds the lock)."""
    from sitestack.core.fsutil import rmtree

    for stale in layer.parent.glob(f".{layer.name}.install-*"):
        rollback(stale)
        rmtree(stale)
