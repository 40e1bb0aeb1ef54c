"""One rule for every path that comes from an archive or a record: it stays inside its tree.

Archive members, symlinks and relocation lists (`prefix-files.json`) are all checked here,
and so is every path a record names before sitestack removes, renames or writes it: a row of
an installed distribution's RECORD, a step of an install journal, a folder of the site's
trash or retired records (`inside`, `plain_dir`), and every NAME or VERSION taken from an
argument or a record (`component`).
A path is resolved component by component against the tree, the way the kernel does it:
each component that is a symlink is replaced by its target (an absolute target counts only
where it names one of the tree's declared prefixes, which map to a folder of the tree), and
`..` is taken after the links before it. A path that climbs above the tree's root, or an
absolute link that names no declared prefix, is refused. A lexical `normpath` alone is not
enough: `l1 -> ../../..` then `l2 -> l1/../../../../outside` looks inside and is not.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.errors import SitestackError, UsageError, VerifyError

if TYPE_CHECKING:  # split_ref (sitestack venv's start path) imports this module: no collections.abc
    from collections.abc import Callable, Mapping

    ReadLink = Callable[[str], "str | None"]

MAX_HOPS = 40  # as the kernel's MAXSYMLINKS
# NAME and VERSION become path components with more around them (VERSION.lua,
# .VERSION.tmp-HOST-PID-RAND, VERSION.tar.zst.tmp-HOST-PID-RAND): at most this many bytes
# keeps every such name under the kernel's 255-byte NAME_MAX.
MAX_COMPONENT = 128

# A path that leaves its tree is an unsafe archive or record: VerifyError, exit 6.
Escape = VerifyError


def check_relative(rel: str, what: str = "path") -> str:
    """A plain relative path: not absolute, no '..', no NUL, already normalized."""
    if not rel or "\0" in rel:
        raise Escape(f"unsafe {what}: empty or bad path {rel!r}")
    if rel.startswith("/"):
        raise Escape(f"unsafe {what}: absolute path {rel!r}")
    if ".." in rel.split("/"):
        raise Escape(f"unsafe {what}: path with '..': {rel!r}")
    if os.path.normpath(rel) != rel.rstrip("/"):
        raise Escape(f"unsafe {what}: path is not normalized: {rel!r}")
    return rel


def component(value: object, what: str = "name",
              error: type[SitestackError] = UsageError) -> str:
    """One path component from an argument or a record (a stack's NAME or VERSION, a folder
    name a record states): a non-empty string, not '.' or '..', without '/', NUL or control
    characters, at most MAX_COMPONENT bytes. Refused with one line of `error`'s class (exit 2
    for an argument) before it becomes part of any path: a 5,000-character VERSION would
    otherwise end in ENAMETOOLONG wherever it is first used."""
    if not isinstance(value, str) or not value:
        raise error(f"{what}: must be a non-empty string, not {value!r}")
    shown = shown_name(value)
    from sitestack.core.shape import line_safe

    if value in (".", "..") or "/" in value or "\t" in value or not line_safe(value):
        raise error(f"{what} {shown} is not a plain name (no '/', '.', '..' or control characters)")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
        raise error(f"{what} {shown} is too long: at most {MAX_COMPONENT} bytes")
    return value


def shown_name(value: str) -> str:
    """A name for a one-line message: quoted, a long one cut (a 5,000-character VERSION)."""
    return repr(value) if len(value) <= 60 else f"{value[:40]!r}... ({len(value)} characters)"


def inside(root: Path, path: str | os.PathLike[str], what: str = "path") -> Path:
    """`path` (absolute, or relative to `root`) as an entry below `root`, reached without
    leaving it: its folders are resolved through the tree's links as the kernel would
    (`resolve`; an absolute link counts only where it points into `root`), its last
    component is not followed (removing or renaming it acts on the entry itself, a link
    included). Raises Escape when it leaves `root`, or names `root` itself or a '..'.

    For every path a record names before sitestack acts on it: RECORD rows of a layer's
    distributions, the steps of an install journal."""
    root_s = os.path.abspath(root)
    p = os.fspath(path)
    if not p or "\0" in p:
        raise Escape(f"unsafe {what}: empty or bad path {p!r}")
    if p.startswith("/"):
        if not p.startswith(root_s.rstrip("/") + "/"):
            raise Escape(f"unsafe {what}: {p!r} leaves {root_s}")
        p = p[len(root_s.rstrip("/")) + 1:]
    folder, _, last = p.rstrip("/").rpartition("/")
    if last in ("", ".", ".."):
        raise Escape(f"unsafe {what}: {os.fspath(path)!r} names no entry below {root_s}")
    try:
        base = resolve(folder, fs_readlink(Path(root_s)), {root_s: ""}) if folder else ""
    except Escape:
        raise Escape(f"unsafe {what}: {os.fspath(path)!r} leaves {root_s}") from None
    return Path(root_s, base, last) if base else Path(root_s, last)


def resolve(rel: str, readlink: ReadLink, prefixes: Mapping[str, str] | None = None) -> str:
    """Resolve `rel` (relative to the tree's root) through the tree's links.

    `readlink(p)` gives the target of the link at tree path `p`, or None if `p` is not a
    link. `prefixes` maps an absolute path to the tree folder it stands for ("" = the
    root). Returns the resolved tree path ("" for the root); raises Escape if it leaves.
    """
    olds = sorted((prefixes or {}).items(), key=lambda kv: len(kv[0]), reverse=True)
    todo = [c for c in rel.split("/") if c not in ("", ".")][::-1]  # a stack: next on top
    if rel.startswith("/"):
        todo = _absolute(rel, olds)[::-1]
    cur: list[str] = []
    hops = 0
    while todo:
        c = todo.pop()
        if c in ("", "."):
            continue
        if c == "..":
            if not cur:
                raise Escape(f"unsafe path: {rel!r} leaves the tree")
            cur.pop()
            continue
        here = "/".join([*cur, c])
        target = readlink(here)
        if target is None:
            cur.append(c)
            continue
        hops += 1
        if hops > MAX_HOPS or not target or "\0" in target:
            raise Escape(f"unsafe path: {rel!r}: too many levels of links, or a bad link")
        if target.startswith("/"):
            cur = []
            todo.extend(_absolute(target, olds)[::-1])
        else:
            todo.extend(target.split("/")[::-1])
    return "/".join(cur)


def _absolute(target: str, olds: list[tuple[str, str]]) -> list[str]:
    """An absolute target as tree components, if it names a declared prefix."""
    for old, folder in olds:
        if target == old or target.startswith(old.rstrip("/") + "/"):
            rest = target[len(old):]
            return [c for c in folder.split("/") if c] + rest.split("/")
    raise Escape(f"unsafe link: {target!r} points outside the tree")


def check_links(links: Mapping[str, str], prefixes: Mapping[str, str] | None = None,
                what: str = "archive") -> None:
    """Every link of a tree (tree path -> target) must resolve inside it, through the others."""
    for rel in links:
        try:
            resolve(rel, links.get, prefixes)
        except Escape:
            raise Escape(f"unsafe {what}: symlink {rel} -> {links[rel]} points outside "
                         "the target") from None


def fs_readlink(root: Path) -> ReadLink:
    """readlink() for a real tree below `root` (None where a path is not a link)."""
    def read(rel: str) -> str | None:
        p = os.path.join(root, rel)
        try:
            if stat.S_ISLNK(os.lstat(p).st_mode):
                return os.readlink(p)
        except (FileNotFoundError, NotADirectoryError):
            pass
        return None

    return read


def plain_file(root: Path, rel: str, what: str = "relocation list") -> Path | None:
    """`root/rel` if it is a regular file reached without any link; None if it is missing,
    a link or not a file (nothing to rewrite). Raises Escape if `rel` leaves the tree or
    passes through a link (a rewrite there would land outside, or somewhere unlisted)."""
    check_relative(rel, what)
    parts = rel.split("/")
    p = str(root)
    for i, c in enumerate(parts):
        p = os.path.join(p, c)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return None
        last = i == len(parts) - 1
        if stat.S_ISLNK(st.st_mode):
            if last:
                return None
            raise Escape(f"unsafe {what}: {rel!r} passes through the link {'/'.join(parts[:i + 1])}")
        if not last and not stat.S_ISDIR(st.st_mode):
            return None
        if last and not stat.S_ISREG(st.st_mode):
            return None
    return Path(p)


def plain_dir(root: Path, rel: str) -> Path | None:
    """`root/rel` if it is a folder reached without any link, else None (Escape if it leaves)."""
    check_relative(rel)
    p = str(root)
    for c in rel.split("/"):
        p = os.path.join(p, c)
        try:
            if not stat.S_ISDIR(os.lstat(p).st_mode):
                return None
        except FileNotFoundError:
            return None
    return Path(p)
