"""The stack a new layer sits on (`sitestack venv`'s --stack), chosen at start-up.

`choose_stack` first tries `quick_stack`: the two common cases read through the records' own
rules (core/stackref.py) into a `QuickStack`, without the site registry, StackRecord or
SiteRoot, which import dataclasses (10-12 ms, core/frozen.py): `sitestack venv` is benchmarked
against `uv venv` (bench/venv.py). Anything unusual goes the registry's way, which also words
every error.
"""

from __future__ import annotations

import os
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.frozen import Frozen
from sitestack.core.stackref import (
    StackPaths,
    given_root,
    read_stack_json,
    split_ref,
    stack_fields,
    stack_prefix,
    unsafe_root_chars,
)
from sitestack.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from sitestack.core.records import StackRecord


class QuickStack(Frozen, StackPaths):
    """What a layer needs of a stack, read from its stack.json by `quick_stack`."""

    __slots__ = ("name", "version", "prefix", "root", "python", "python_xy")
    name: str
    version: str
    prefix: Path
    root: Path
    python: str
    python_xy: str
    user = ()  # quick_stack takes only stacks whose [user] table is empty

    def __init__(self, name: str, version: str, prefix: Path, root: Path, python: str,
                 python_xy: str) -> None:
        self._init(name, version, prefix, root, python, python_xy)


def quick_stack(stack_arg: str | None, root_arg: str | None) -> QuickStack | None:
    """choose_stack's two common cases, `--stack NAME/VERSION` with a root given (--root,
    $SITESTACK_ROOT, the loaded module's root) and a loaded module ($SITESTACK_PREFIX).

    None whenever anything is unusual (a bad ref or root path, a missing or odd record, a
    [user] policy to write as pip.conf, a version to look up): choose_stack then decides, and
    raises its own errors.
    """
    if stack_arg:
        raw = given_root(root_arg)
        try:
            name, version = split_ref(stack_arg)
        except UsageError:
            return None
        if version is None or raw is None:
            return None
        root = os.path.abspath(os.path.expanduser(raw))
        if unsafe_root_chars(root):
            return None
        prefix = stack_prefix(root, name, version)
    else:
        loaded = os.environ.get("SITESTACK_PREFIX")
        if not loaded:
            return None
        prefix = Path(loaded)
    try:
        data = read_stack_json(prefix)
        user = data.get("user")
        if isinstance(user, dict) and any(user.values()):
            return None
        f = stack_fields(prefix, data)  # every field StackRecord.load checks
        return QuickStack(f["name"], f["version"], prefix, f["root"], f["python"], f["python_xy"])
    except Exception:  # noqa: BLE001  # whatever it is, choose_stack meets it again and says so
        return None


def choose_stack(stack_arg: str | None, root_arg: str | None) -> StackRecord | QuickStack:
    """--stack, then the loaded module (SITESTACK_PREFIX), then the root's default."""
    quick = quick_stack(stack_arg, root_arg)
    if quick is not None:
        return quick
    from sitestack.core.layout import resolve_root
    from sitestack.site.registry import Site

    if stack_arg:
        return Site(resolve_root(root_arg)).get(stack_arg)
    loaded = os.environ.get("SITESTACK_PREFIX")
    if loaded:
        rec = Site.from_prefix(Path(loaded))
        if rec is not None:
            return rec
    site = Site(resolve_root(root_arg))
    names = site.names()
    if len(names) == 1:
        return site.get(names[0])
    if not names:
        raise NotFoundError(f"no stacks in {site.root.path}; load a module or give --stack/--root")
    raise UsageError(f"{site.root.path} has several stacks ({', '.join(names)}): give --stack NAME[/VERSION]")
