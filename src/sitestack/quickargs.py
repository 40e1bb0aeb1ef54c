"""A plain walk of a command's usual command line, without argparse.

Importing and building argparse costs a command about 15 ms of start-up here (with
gettext, locale and shutil), as much as `sitestack clone` spends making a small stack's
folders. `parse` gives the namespace argparse would give, or None where this walk is not
sure to agree with it (--help, an abbreviation, `--`, a short option glued to its value, a
value that must be checked, a missing or second positional): then the CLI asks argparse,
which also words every error. Each command keeps its tables in step with its `register`;
tests/unit/test_quick_args.py compares the two on many lines.
"""

from __future__ import annotations

from types import SimpleNamespace

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def parse(argv: list[str], defaults: Mapping[str, Any], *, flags: Mapping[str, str],
          values: Mapping[str, str], positional: str, optional_positional: bool = False,
          convert: Mapping[str, Callable[[str], Any]] | None = None,
          ok: Callable[[dict[str, Any]], bool] | None = None) -> SimpleNamespace | None:
    """`flags`: exact spelling -> dest of a store_true; `values`: spelling -> dest of an
    option with one value (`--opt V`, or `--opt=V` for a long one); `positional`: the dest
    of the one positional; `convert[dest]`: argparse's type= or choices= (ValueError: None);
    `ok(ns)`: the parser's own rules (required options, exclusive groups)."""
    ns: dict[str, Any] = dict(defaults)
    seen = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if arg in flags:
            ns[flags[arg]] = True
        elif arg in values:
            # argparse takes a next word starting with '-' for an option (or a negative number)
            if i + 1 == len(argv) or argv[i + 1].startswith("-"):
                return None
            ns[values[arg]] = argv[i + 1]
            i += 1
        elif eq and key.startswith("--") and key in values:
            ns[values[key]] = value
        elif arg.startswith("-") or seen:
            return None
        else:
            ns[positional] = arg
            seen = True
        i += 1
    if not (seen or optional_positional):
        return None
    for dest, fn in (convert or {}).items():
        if ns.get(dest) is not None and isinstance(ns[dest], str):
            try:
                ns[dest] = fn(ns[dest])
            except ValueError:
                return None
    if ok is not None and not ok(ns):
        return None
    return SimpleNamespace(**ns)


def choice(*allowed: str) -> Callable[[str], str]:
    """argparse's choices=: a value outside them is argparse's to report."""
    def check(v: str) -> str:
        if v not in allowed:
            raise ValueError(v)
        return v
    return check
