"""The conda front door's activations, kept in the shell's environment as conda keeps its own.

Each `conda activate` is one level: the environment's prefix, its name, and every variable
the level changed, with its value before and after (``None``: unset). `conda deactivate`
undoes the top level: a variable still as the level left it gets its old value back; one the
user changed since keeps the user's value, except PATH, which loses only the entries the
level added and gets back the ones it took away (at the place of the first added one). So
activations stack as conda's do, and deactivating them in turn gives back the very shell.

The levels are JSON in ``_SITESTACK_CONDA``; beside it, for the modulefile's unload (which
cannot run this code), ``_SITESTACK_CONDA_PATHS`` lists the PATH entries the levels added that
were not there before the first, and ``_SITESTACK_CONDA_UNSET`` the variables they created
(site/modulefiles/content.py, ``front_door_unload``). All three are read back from the
environment, so nothing in them is trusted: ``read_state`` checks the whole shape and refuses
anything else with one line, leaving the shell alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sitestack.errors import UsageError
from sitestack.site.modulefiles.content import (
    FRONT_DOOR_PATHS,
    FRONT_DOOR_STATE,
    FRONT_DOOR_UNSET,
    UNSETTABLE,
)

VERSION = 1
KINDS = ("base", "clone", "layer")
MAX_LEVELS = 64
MAX_BYTES = 1 << 20
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STATE_VARS = (FRONT_DOOR_STATE, FRONT_DOOR_PATHS, FRONT_DOOR_UNSET)


@dataclass(frozen=True)
class Level:
    prefix: str
    name: str  # CONDA_DEFAULT_ENV of this level
    kind: str  # base | clone | layer
    old: dict[str, str | None]
    new: dict[str, str | None]

    def to_json(self) -> dict[str, object]:
        return {"prefix": self.prefix, "name": self.name, "kind": self.kind, "old": self.old, "new": self.new}

    def added(self, var: str = "PATH") -> list[str]:
        """Entries of a path variable this level added."""
        before = set(_entries(self.old.get(var)))
        return [p for p in _entries(self.new.get(var)) if p not in before]


@dataclass(frozen=True)
class State:
    stack: str  # NAME/VERSION the levels were made on ("" without a loaded stack)
    levels: tuple[Level, ...]

    @property
    def top(self) -> Level | None:
        return self.levels[-1] if self.levels else None


def _bad(why: str) -> UsageError:
    return UsageError(f"${FRONT_DOOR_STATE} is not what the conda front door wrote ({why}); the shell "
                      "was left as it was",
                      hint=f"unset {' '.join(STATE_VARS)}, or start a new shell")


def _values(raw: object, what: str) -> dict[str, str | None]:
    if not isinstance(raw, dict) or len(raw) > 256:
        raise _bad(f"{what} is not an object of variables")
    for k, v in raw.items():
        if not isinstance(k, str) or not _NAME.fullmatch(k) or k in STATE_VARS:
            raise _bad(f"{what} names {k!r}, not a variable it may set")
        if v is not None and not isinstance(v, str):
            raise _bad(f"{what}[{k}] is neither a string nor null")
    return dict(raw)


def read_state(env: Mapping[str, str]) -> State:
    """The activations recorded in `env` (none when it has no record)."""
    raw = env.get(FRONT_DOOR_STATE)
    if raw is None:
        return State("", ())
    if len(raw) > MAX_BYTES:
        raise _bad("too long")
    try:
        data = json.loads(raw)
    except ValueError:
        raise _bad("not JSON") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise _bad(f"not version {VERSION} of its format")
    stack, levels = data.get("stack"), data.get("levels")
    if not isinstance(stack, str) or not isinstance(levels, list) or len(levels) > MAX_LEVELS:
        raise _bad("no stack or levels")
    out = []
    for i, lv in enumerate(levels):
        if not isinstance(lv, dict):
            raise _bad(f"level {i} is not an object")
        prefix, name, kind = lv.get("prefix"), lv.get("name"), lv.get("kind")
        if not isinstance(prefix, str) or not prefix.startswith("/") or "\n" in prefix:
            raise _bad(f"level {i} has no absolute prefix")
        if not isinstance(name, str) or "\n" in name or kind not in KINDS:
            raise _bad(f"level {i} has no name or kind")
        out.append(Level(prefix, name, str(kind), _values(lv.get("old"), f"level {i}'s old values"),
                         _values(lv.get("new"), f"level {i}'s new values")))
    return State(stack, tuple(out))


def _entries(value: str | None) -> list[str]:
    return [p for p in (value or "").split(":") if p]


def record(env: Mapping[str, str], state: State) -> dict[str, str]:
    """`env` with the state variables saying `state` (all three gone with no level left)."""
    out = {k: v for k, v in env.items() if k not in STATE_VARS}
    if not state.levels:
        return out
    out[FRONT_DOOR_STATE] = json.dumps({"v": VERSION, "stack": state.stack,
                                        "levels": [lv.to_json() for lv in state.levels]},
                                       separators=(",", ":"), ensure_ascii=False)
    # PATH as it was before the first level that changed it.
    there = set(_entries(next((lv.old["PATH"] for lv in state.levels if "PATH" in lv.old), None)))
    paths = list(dict.fromkeys(p for lv in state.levels for p in lv.added()
                               if p.startswith("/") and p not in there))
    # A variable the levels created: unset where the first level touching it found it unset.
    created: dict[str, bool] = {}
    for lv in state.levels:
        for var, old in lv.old.items():
            created.setdefault(var, old is None)
    unset = [v for v, was_unset in created.items() if was_unset and UNSETTABLE.fullmatch(v)]
    if paths:
        out[FRONT_DOOR_PATHS] = ":".join(paths)
    if unset:
        out[FRONT_DOOR_UNSET] = " ".join(unset)
    return out


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(old, new) values of every variable that differs, the state variables aside."""
    names = sorted(k for k in set(before) | set(after)
                   if k not in STATE_VARS and before.get(k) != after.get(k))
    return {k: before.get(k) for k in names}, {k: after.get(k) for k in names}


def undo(env: Mapping[str, str], level: Level) -> dict[str, str]:
    """`env` with `level` taken back (see the module's docstring)."""
    out = dict(env)
    for var, old in level.old.items():
        now, new = out.get(var), level.new.get(var)
        if now == new:
            if old is None:
                out.pop(var, None)
            else:
                out[var] = old
        elif var == "PATH" and now is not None:
            out[var] = ":".join(_path_back(_entries(now), level))
    return out


def _path_back(now: list[str], level: Level) -> list[str]:
    added = set(level.added())
    gone = [p for p in _entries(level.old.get("PATH")) if p not in set(_entries(level.new.get("PATH")))]
    out: list[str] = []
    for p in now:
        if p in added:
            out += [g for g in gone if g not in out and g not in now]
            gone = []
        else:
            out.append(p)
    return [g for g in gone if g not in out] + out
