"""Move a staged install into a layer as one undoable step (a journal of renames).

`sitestack install` has uv install into a throw-away venv (the stage) beside the layer, so
uv never writes into the layer itself. This module then moves the staged files in by rename
(same filesystem; a new top-level folder moves in one rename), moving aside first whatever it
replaces: the files of a layer distribution being replaced, and any file in the way. Every
step is written to a journal *before* it is done and each undo step is idempotent, so
`rollback` restores the layer's distributions exactly, after an error, a refusal by `check`,
or (on the next install, which finds the journal) a kill -9.

A journal is a record like any other: `read_journal` honours only one the layer's owner
wrote, whose every path stays in the layer or its staging folder; `recover` (install,
rebase) and `doctor --fix` report anything else and leave it alone.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
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
        # 0600 whatever the umask: read_journal honours no journal others may write.
        fd = os.open(work / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._log: IO[str] = os.fdopen(fd, "a", encoding="utf-8")

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
        rollback(self.work, self.layer)


# The staging folder `sitestack install` makes beside its layer: PREFIX<host>-<pid>-<rand>
# (core.publish.make_temp, mode 0700). It holds the journal and the backups.
STAGING = ".{}.install-"
KINDS = frozenset({"aside", "copied", "added", "created", "rmdir"})


@dataclass(frozen=True)
class Step:
    kind: str
    target: Path  # in the layer
    aside: Path | None  # in the staging folder: the backup (aside, copied) or the staged entry (added)


def read_journal(work: Path, layer: Path) -> tuple[list[Step], bool]:
    """The one reader of an install journal: (its steps, whether the install committed).

    Honoured only when the layer's owner wrote it (or the user running this, as root for a
    user's layer): the staging folder and the journal are theirs, neither is a link nor
    writable by others (in a shared sticky folder another user could plant one beside the
    layer). Every path must be confined (core.safepath.inside):
    a step's target to the layer, its backup or staged entry to this folder. Anything else
    is one VerifyError line naming why, and nothing of it is acted on. No journal (a run
    killed while uv staged): no steps.
    """
    from sitestack.core import safepath
    from sitestack.core.shape import Shape
    from sitestack.errors import VerifyError

    shape = Shape(f"{work}", VerifyError)
    owner = os.lstat(layer).st_uid
    trusted = {owner, os.geteuid()}  # the layer's owner, or whoever runs this (root, for a user)
    for path in (work, work / JOURNAL):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return [], False  # the folder is checked first: no journal, nothing was moved
        what = "its journal" if path != work else "it"
        if stat.S_ISLNK(st.st_mode):
            shape.fail(f"{what} is a link")
        if st.st_uid not in trusted:
            shape.fail(f"{what} belongs to uid {st.st_uid}, not to the layer's owner (uid {owner})")
        if st.st_mode & 0o022:
            shape.fail(f"{what} is writable by others")
    lines = shape.text_file(work / JOURNAL).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    done = bool(lines) and lines[-1] == DONE
    steps = []
    for i, line in enumerate(lines[:-1] if done else lines, 1):
        try:
            raw = json.loads(line)
        except ValueError:
            if i == len(lines):
                continue  # a torn last line: that step never started
            shape.fail(f"line {i} is not JSON")
        d = shape.table(raw, f"line {i}")
        kind = d.get("k")
        if kind not in KINDS:
            shape.fail(f"line {i}: unknown step {kind!r}")
        aside = None if d.get("a") is None else shape.text(d["a"], f"line {i}: a", one_line=False)
        if (aside is None) != (kind in ("created", "rmdir")):
            shape.fail(f"line {i}: a {kind!r} step {'has' if aside else 'needs'} a second path")
        try:
            target = safepath.inside(layer, shape.text(d.get("t"), f"line {i}: t", one_line=False), "journal path")
            if aside is not None:
                # resolved from the folder itself, so a link at backup/ or stage/ counts too
                second = safepath.inside(work, aside, "journal path")
                where = "stage" if kind == "added" else "backup"
                if second.relative_to(work).parts[0] != where or second.parent == work:
                    shape.fail(f"line {i}: {aside!r} is not in {work / where}")
                steps.append(Step(kind, target, second))
            else:
                steps.append(Step(kind, target, None))
        except safepath.Escape as e:
            shape.fail(f"line {i}: {e}")
    return steps, done


def rollback(work: Path, layer: Path) -> bool:
    """Undo a journal's steps, newest first; False when the install had finished (nothing to
    undo). The journal is read whole first (read_journal): an untrusted one changes nothing."""
    from sitestack.core.fsutil import rmtree

    steps, done = read_journal(work, layer)
    if done:
        return False
    for step in reversed(steps):
        t, a = step.target, step.aside
        if step.kind == "added" and os.path.lexists(t) and a is not None and not os.path.lexists(a):
            if t.is_dir() and not t.is_symlink():
                rmtree(t)
            else:
                os.unlink(t)
        elif step.kind in ("aside", "copied") and a is not None and os.path.lexists(a):
            t.parent.mkdir(parents=True, exist_ok=True)
            if step.kind == "copied" and os.path.lexists(t):
                os.unlink(t)
            os.rename(a, t)
        elif step.kind == "created" and os.path.lexists(t):
            os.unlink(t)
        elif step.kind == "rmdir" and not os.path.lexists(t):
            os.makedirs(t, exist_ok=True)
    return True


@dataclass(frozen=True)
class Leftover:
    """A staging folder beside a layer that a killed `sitestack install` seems to have left."""

    path: Path
    host: str | None  # None: a name without host and pid (not made by make_temp)
    pid: int | None
    pending: bool  # its journal has moves the install never committed: the layer is half changed
    untrusted: str | None = None  # why sitestack leaves it alone (read_journal's reason); None: honoured
    uid: int | None = None  # its owner

    @property
    def local_dead(self) -> bool:
        """A run of this host whose process is gone (another host's pid cannot be checked)."""
        from sitestack.core.publish import HOST, pid_alive

        return self.host == HOST and self.pid is not None and not pid_alive(self.pid)


def _layer_locked(layer: Path) -> bool:
    """Whether an install (or rebase) of `layer` holds its lock now; takes nothing."""
    import fcntl

    from sitestack.user.layer import lock_path

    try:
        fd = os.open(lock_path(layer), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: nobody ever locked it, so nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops the shared lock if we got it


def leftovers(layer: Path, *, have_lock: bool = False) -> list[Leftover]:
    """Staging folders of killed installs of `layer` (none while an install holds the lock,
    none of a live process of this host: that install is still running), each with whether
    its journal is honoured. `have_lock`: the caller holds the layer's lock (flock would
    refuse a second descriptor of ours)."""
    from sitestack.core.publish import HOST, owner, pid_alive
    from sitestack.errors import VerifyError

    prefix = STAGING.format(layer.name)
    try:
        names = sorted(e.name for e in os.scandir(layer.parent) if e.name.startswith(prefix))
    except OSError:
        return []
    if not names or (not have_lock and _layer_locked(layer)):
        return []
    out = []
    for name in names:
        path = layer.parent / name
        if ".install-" in name[len(prefix):]:
            continue  # another layer's: `L.install-x`'s staging folders are `.L.install-x.install-*`
        who = owner(name, prefix)
        if who is not None and who[0] == HOST and pid_alive(who[1]):
            continue
        try:
            uid = os.lstat(path).st_uid
        except OSError:
            continue  # gone meanwhile
        if who is None or len(name[len(prefix):].split("-")) != 3:
            out.append(Leftover(path, None, None, False, "its name has no host and pid: "
                                "`sitestack install` did not make it", uid))
            continue
        try:
            steps, done = read_journal(path, layer)
        except VerifyError as e:
            out.append(Leftover(path, who[0], who[1], False, str(e), uid))
            continue
        out.append(Leftover(path, who[0], who[1], bool(steps) and not done, None, uid))
    return out


def recover(layer: Path) -> list[Leftover]:
    """Undo what killed installs left half-done, then drop their folders (the caller holds the
    lock). A folder whose journal is not honoured is reported on stderr and left alone;
    returns those."""
    from sitestack.core.fsutil import rmtree
    from sitestack.output import warn

    left = []
    for lo in leftovers(layer, have_lock=True):
        if lo.untrusted is not None:
            warn(f"left alone: {lo.path} ({lo.untrusted})")
            left.append(lo)
            continue
        rollback(lo.path, layer)
        rmtree(lo.path)
    return left
