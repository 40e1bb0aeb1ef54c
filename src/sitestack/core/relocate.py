"""Rewrite a tree's embedded prefix: shebangs, .pth, direct_url.json, text files.

The files to touch come from the build's prefix-files list (see manifest.scan), so a
relocation reads only those files. Each rewritten file is replaced by a new inode,
which is what clones need: a hardlinked or reflinked file is never edited in place.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core import safepath
from sitestack.core.fsutil import temp_beside
from sitestack.core.shebang import MAX_SHEBANG, fix_shebang  # noqa: F401 (MAX_SHEBANG: re-exported)
from sitestack.errors import UsageError

if TYPE_CHECKING:  # not at run time: importing manifest costs hashlib and concurrent.futures
    from sitestack.core.manifest import PrefixHit

def check_target(path: str, what: str, hint: str) -> str:
    """Refuse, up front (exit 2, one line), a relocation target no relocated file can carry.

    Relocation writes the new path into Python sources as a string literal (`_sysconfigdata`,
    scripts, .pth files): a quote or a backslash there would end or bend it, and a control
    character would break a line. Byte replacement cannot escape it soundly (each literal
    chose its own quotes), so such a path is refused rather than relocated wrongly. The shell
    is no limit (activate scripts quote every path), so spaces, `$()` and backticks are fine.
    One rule for `stage --to` and `clone`."""
    bad = sorted({c for c in path if c in "'\"\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise UsageError(f"{what} {path!r} contains {' '.join(repr(c) for c in bad)}, which relocated "
                         "Python files cannot carry", hint=hint)
    return path


@dataclass(frozen=True)
class Relocation:
    rewritten: tuple[str, ...] = ()
    binaries: tuple[str, ...] = ()  # files that embed the prefix but could not be rewritten


@dataclass
class _Acc:
    rewritten: list[str] = field(default_factory=list)
    binaries: list[str] = field(default_factory=list)


def replace_padded(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace `old` with `new` in NUL-terminated strings, keeping the file's length (conda's way).

    A shorter `new` is padded with NULs (as conda does). A longer one grows into the NUL
    padding conda left after the string's terminator when it installed a shorter prefix
    than the placeholder; if that room is not all NUL, nothing is changed and UsageError
    is raised.
    """
    out = bytearray()
    pos = 0
    while (i := data.find(old, pos)) >= 0:
        end = data.find(b"\0", i)
        if end < 0:
            end = len(data)
        s = data[i:end]
        r = s.replace(old, new)
        if len(r) <= len(s):
            out += data[pos:i] + r + b"\0" * (len(s) - len(r))
            pos = end
        else:
            grow = len(r) - len(s)
            room = data[end : end + grow + 1]
            if len(room) < grow + 1 or room.strip(b"\0"):
                raise UsageError(
                    f"no room for a {len(new)}-byte prefix in a binary string "
                    f"(needs {grow} more padding bytes)"
                )
            out += data[pos:i] + r
            pos = end + grow
    out += data[pos:]
    assert len(out) == len(data)
    return bytes(out)


def write_replacing(path: Path, data: bytes) -> None:
    """Replace a file with new content as a new inode, keeping its permission bits."""
    st = os.lstat(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, stat.S_IMODE(st.st_mode) | stat.S_IRUSR)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rewrite_file(path: Path, old: str, new: str, kind: str = "text") -> bool:
    """Rewrite one file; True if it changed. Binaries are left alone (reported)."""
    data = path.read_bytes()
    o, n = old.encode(), new.encode()
    if o not in data:
        return False
    if kind == "binary":
        return False
    updated = fix_shebang(data.replace(o, n))
    if updated == data:
        return False
    write_replacing(path, updated)
    return True


def relocate(
    root: Path,
    old_prefix: str,
    new_prefix: str,
    hits: Iterable[PrefixHit],
    *,
    padded_binaries: Iterable[str] = (),
) -> Relocation:
    """Rewrite every listed file under `root` from old_prefix to new_prefix.

    `padded_binaries` names binary files whose placeholder was padded at build time
    (conda packages); those are rewritten with NUL padding. Other binaries that embed
    the prefix are only reported.
    """
    return relocate_map(root, {old_prefix: new_prefix}, hits, padded_binaries=padded_binaries)


def relocate_map(
    root: Path,
    mapping: dict[str, str],
    hits: Iterable[PrefixHit],
    *,
    padded_binaries: Iterable[str] = (),
    skip: Iterable[str] = (),
) -> Relocation:
    """Rewrite every listed file from any old prefix in `mapping` to its new one, in one pass.

    One pass over all old prefixes, longest first: replacing them one after another would
    rewrite a new path again when it happens to start with another old prefix (a layer at
    X/v staged to X/vs/...).
    """
    root = Path(root)
    padded, skipped = set(padded_binaries), set(skip)
    olds = sorted(mapping, key=len, reverse=True)
    pat = re.compile(b"|".join(re.escape(os.fsencode(o)) for o in olds))
    new = {os.fsencode(o): os.fsencode(n) for o, n in mapping.items()}
    acc = _Acc()
    for hit in hits:
        if hit.path in skipped:
            continue
        # The one path rule (safepath): a listed file is rewritten only if it is a regular
        # file inside root reached without a link; a path that leaves root is refused.
        found = safepath.plain_file(root, hit.path)
        if found is None:
            continue
        path = found
        data = path.read_bytes()
        if not pat.search(data):
            continue  # a hit for another prefix (build: the final one), nothing to do
        if hit.kind == "binary":
            if hit.path in padded:
                for o in olds:
                    data = replace_padded(data, os.fsencode(o), new[os.fsencode(o)])
                write_replacing(path, data)
                acc.rewritten.append(hit.path)
            else:
                acc.binaries.append(hit.path)
            continue
        updated = fix_shebang(pat.sub(lambda m: new[m.group(0)], data))
        if updated != data:
            write_replacing(path, updated)
            acc.rewritten.append(hit.path)
    return Relocation(tuple(acc.rewritten), tuple(acc.binaries))


def retarget(target: str, mapping: dict[str, str]) -> str | None:
    """A link target into an old prefix of `mapping`, pointed at its new one; None if it
    names none. Longest old prefix first, as relocate_map does."""
    for old in sorted(mapping, key=len, reverse=True):
        if target == old or target.startswith(old + "/"):
            return mapping[old] + target[len(old):]
    return None


def relink(root: Path, mapping: dict[str, str], links: Mapping[str, str] | None = None) -> list[str]:
    """Point absolute symlinks under `root` into an old prefix at the new one (the one
    symlink repointer). `links` ({rel: target}, from a manifest) spares walking the tree."""
    if links is None:
        links = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    links[os.path.relpath(p, root)] = os.readlink(p)
    changed = []
    for rel, target in links.items():
        new = retarget(target, mapping)
        if new is not None:
            p = os.path.join(root, rel)
            os.unlink(p)
            os.symlink(new, p)
            changed.append(rel)
    return changed
