"""What a conda prefix's conda-meta records say about its files.

Two uses: guarding the hardlinked package cache against in-place writes while the PyPI
layer is installed, and relocating clones and stages (text placeholders rewritten, binary
placeholders rewritten inside the NUL padding conda left at install time).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from sitestack.errors import BuildError, UsageError

# -- guarding the hardlinked cache against in-place writes ------------------------------------

def conda_files(prefix: Path) -> dict[str, str]:
    """{relative path: package name} of every file conda-meta says a package installed."""
    out: dict[str, str] = {}
    for rec in _meta_records(prefix):
        for p in rec[1].get("paths_data", {}).get("paths", []):
            out[p["_path"]] = str(rec[1].get("name", ""))
    return out


def snapshot_conda_files(prefix: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime_ns) of every conda-installed file; compare with check_conda_files."""
    snap: dict[str, tuple[int, int, int]] = {}
    for rel in conda_files(prefix):
        try:
            st = os.lstat(Path(prefix) / rel)
        except OSError:
            continue
        snap[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return snap


def check_conda_files(prefix: Path, snapshot: Mapping[str, tuple[int, int, int]]) -> None:
    """Raise BuildError if a later step (the PyPI layer) removed, replaced or edited conda files."""
    owners = conda_files(prefix)
    changed: dict[str, list[str]] = {}
    for rel, (ino, size, mtime) in snapshot.items():
        try:
            st = os.lstat(Path(prefix) / rel)
        except OSError:
            changed.setdefault(owners.get(rel, "?"), []).append(f"{rel} (removed)")
            continue
        if (st.st_ino, st.st_size, st.st_mtime_ns) != (ino, size, mtime):
            how = "edited in place" if st.st_ino == ino else "replaced"
            changed.setdefault(owners.get(rel, "?"), []).append(f"{rel} ({how})")
    if changed:
        lines = [f"  conda package {pkg}: " + ", ".join(files[:5]) + (" ..." if len(files) > 5 else "")
                 for pkg, files in sorted(changed.items())]
        raise BuildError(
            "the PyPI layer overwrote files installed by conda packages:\n" + "\n".join(lines),
            hint="drop the conflicting requirement from [packages] or from [conda] packages",
        )


# -- relocation ----------------------------------------------------------------------------

class CondaRelocation(NamedTuple):
    text_files: tuple[str, ...]  # text placeholders and python entry points (shebangs)
    binary_files: tuple[str, ...]  # binary placeholders, rewritten in their NUL padding
    shortest_placeholder: int | None  # the longest prefix every binary file can take; None: no limit
    placeholders: Mapping[str, int]  # {binary file: its placeholder length}


def _meta_records(prefix: Path) -> list[tuple[Path, dict[str, Any]]]:
    meta = Path(prefix) / "conda-meta"
    out = []
    for f in sorted(meta.glob("*.json")) if meta.is_dir() else []:
        try:
            out.append((f, json.loads(f.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return out


def conda_relocation(prefix: Path) -> CondaRelocation:
    text: list[str] = []
    binary: dict[str, int] = {}
    for _f, rec in _meta_records(prefix):
        for p in rec.get("paths_data", {}).get("paths", []):
            path = p["_path"]
            ph = p.get("prefix_placeholder")
            if ph and p.get("file_mode") == "binary":
                binary[path] = min(binary.get(path, 1 << 30), len(ph.encode()))
            elif ph or p.get("path_type") == "unix_python_entry_point":
                text.append(path)
    shortest = min(binary.values()) if binary else None
    return CondaRelocation(tuple(sorted(set(text))), tuple(sorted(binary)), shortest, binary)


def check_new_prefix(prefix: Path, new_prefix: str, reloc: CondaRelocation | None = None) -> None:
    """Raise UsageError if `new_prefix` does not fit a binary placeholder. Call before writing."""
    reloc = reloc or conda_relocation(prefix)
    n = len(os.fsencode(str(new_prefix)))
    if reloc.shortest_placeholder is not None and n > reloc.shortest_placeholder:
        worst = sorted(p for p, ln in reloc.placeholders.items() if ln < n)
        raise UsageError(
            f"the path {new_prefix} is {n} bytes, but conda packages in this stack have binary "
            f"files with room for a prefix of at most {reloc.shortest_placeholder} bytes "
            f"({', '.join(worst[:3])}{' ...' if len(worst) > 3 else ''}); choose a shorter path"
        )


def relocate_conda(root: Path, old_prefix: str, new_prefix: str) -> list[str]:
    """Rewrite a copied conda prefix at `root` from old_prefix to new_prefix.

    Checks every binary first (nothing is written if one has no room), then rewrites
    text files and binaries as new inodes (never in place: they may be hardlinks into the
    package cache or the source stack), then updates conda-meta so it stays valid.
    Returns the relative paths rewritten.
    """
    from sitestack.core.relocate import replace_padded, rewrite_file, write_replacing

    root = Path(root)
    reloc = conda_relocation(root)
    check_new_prefix(root, new_prefix, reloc)
    o, n = os.fsencode(old_prefix), os.fsencode(new_prefix)
    for rel in reloc.binary_files:
        p = root / rel
        if p.is_file() and not p.is_symlink():
            replace_padded(p.read_bytes(), o, n)  # dry run: raises before any write
    changed: list[str] = []
    for rel in reloc.text_files:
        p = root / rel
        if p.is_file() and not p.is_symlink() and rewrite_file(p, old_prefix, new_prefix):
            changed.append(rel)
    for rel in reloc.binary_files:
        p = root / rel
        if not p.is_file() or p.is_symlink():
            continue
        data = p.read_bytes()
        if o in data:
            write_replacing(p, replace_padded(data, o, n))
            changed.append(rel)
    rewrite_conda_meta(root, changed)
    return changed


def rewrite_conda_meta(root: Path, changed: Iterable[str]) -> None:
    """Refresh sha256_in_prefix (and size) in conda-meta for files rewritten by a relocation.

    conda-meta names no prefix itself (paths are relative; prefix_placeholder is the
    package's build placeholder), so only the per-file hashes change with the prefix.
    """
    from sitestack.core.fsutil import atomic_write_bytes

    root = Path(root)
    todo = set(changed)
    if not todo:
        return
    for f, rec in _meta_records(root):
        dirty = False
        for p in rec.get("paths_data", {}).get("paths", []):
            if p["_path"] in todo:
                data = (root / p["_path"]).read_bytes()
                p["sha256_in_prefix"] = hashlib.sha256(data).hexdigest()
                if p.get("file_mode") != "binary" and "prefix_placeholder" not in p:
                    p["size_in_bytes"] = len(data)
                dirty = True
        if dirty:
            mode = f.stat().st_mode & 0o777
            atomic_write_bytes(f, (json.dumps(rec, indent=2) + "\n").encode(), mode | 0o200)
            os.chmod(f, mode)
