"""A staged copy's own contents: relocated to its final path, `activate`, and its marker.

Every staged copy -- extracted on a node, or made once into a squashfs image that nodes mount
at that same path -- is a folder DIR/sitestack/<name>-<version>-<hash> holding `stack/` (and
`layer/`), relocated to that folder, an `activate` script, and `.sitestack-stage/` (the
archive header, and the marker written last). What is read back from one (a marker, a header)
is read without following a link and checked for shape before it is believed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from sitestack.core import safepath
from sitestack.core.bytecode import compile_paths
from sitestack.core.fsutil import atomic_write_json, atomic_write_text, make_readonly
from sitestack.core.relocate import check_target, relocate_map, retarget
from sitestack.errors import BuildError, StageError, VerifyError
from sitestack.scale.pack import Header
from sitestack.scale.unpack import Unpacked

STAGE_DIR = "sitestack"
META = ".sitestack-stage"
MARKER = "verified.json"
MAX_RECORD = 1 << 20  # a marker or header read back from a staged copy is small


def base_dir(to: str, node: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(to.replace("{node}", node)))) / STAGE_DIR


def check_to(to: str) -> None:
    """--to by core.relocate.check_target, the rule clone follows too."""
    check_target(to, "--to", "stage to a folder without quotes, backslashes or control characters")


def read_record(final: Path, name: str) -> dict[str, Any] | None:
    """A JSON object from `final/.sitestack-stage/NAME`, or None when there is none that can
    be believed: `final` and the record are reached without a link, the record is a small
    regular file, and it parses to an object. Raises OSError where `final` cannot be read at
    all (a FUSE mount whose daemon is gone: ENOTCONN)."""
    import stat

    try:
        if not stat.S_ISDIR(os.lstat(final).st_mode):
            return None
    except FileNotFoundError:
        return None
    path = safepath.plain_file(final, f"{META}/{name}", "staged copy")
    if path is None:
        return None
    with open(path, "rb") as f:
        data = f.read(MAX_RECORD + 1)
    if len(data) > MAX_RECORD:
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def is_verified(final: Path, header: Header) -> bool:
    """A complete copy of this very content: its marker (written last) names its hash."""
    try:
        data = read_record(final, MARKER)
    except (OSError, VerifyError):
        return False
    return data is not None and data.get("content_hash") == header.content_hash


def finish_copy(tmp: Path, final: Path, u: Unpacked) -> None:
    """Relocate an extracted, verified tree to `final`, and mark it.

    Every file was checked against its manifest as it was extracted (unpack.py), before any
    relocation: reading the tree back would only hash every byte a second time."""
    h = u.header
    mapping = {old: str(final / role) for role, old in h.prefixes.items()}
    warnings: list[str] = []
    for role in h.prefixes:
        root = tmp / role
        changed: set[str] = set()
        if role == "stack" and (root / "conda-meta").is_dir():
            from sitestack.conda.prefix import relocate_conda

            changed |= set(relocate_conda(root, h.prefixes["stack"], mapping[h.prefixes["stack"]]))
            changed |= {f"conda-meta/{p.name}" for p in (root / "conda-meta").glob("*.json")}
        rel = relocate_map(root, mapping, u.hits.get(role, []), skip=changed)
        changed |= set(rel.rewritten)
        warnings += [f"{role}/{b}" for b in rel.binaries]
        changed |= _relink(root, u.manifests[role].symlinks, mapping)
        _recompile(tmp, root, final / role, h.python_xy, changed, u.manifests[role].files)
    meta = tmp / META
    meta.mkdir()
    atomic_write_json(meta / "header.json", h.to_json())
    atomic_write_text(tmp / "activate", activate_script(final, "layer" in h.prefixes))
    atomic_write_json(meta / MARKER, {  # written last: its presence means "verified"
        "content_hash": h.content_hash, "files": h.files, "bytes": h.bytes,
        "host": socket.gethostname(), "verified": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "binaries_naming_old_prefix": warnings})
    make_readonly(tmp)


def _relink(root: Path, links: dict[str, str], mapping: dict[str, str]) -> set[str]:
    """Point absolute links into an old prefix at the staged copy.

    Every link was resolved inside the tree (through all the others) when the archive was
    checked (members.check_received); a link path is still checked to be a plain relative
    path whose folder is reached without a link, so the unlink cannot act elsewhere."""
    changed = set()
    for rel, target in links.items():
        new = retarget(target, mapping)  # the one repointing rule (core.relocate)
        if new is not None:
            safepath.check_relative(rel, "archive symlink")
            parent = os.path.dirname(rel)
            if parent and safepath.plain_dir(root, parent) is None:
                raise VerifyError(f"unsafe archive: the folder of symlink {rel} is not a folder")
            if not os.path.islink(root / rel):
                raise VerifyError(f"archive symlink {rel} is not a symlink on disk")
            os.unlink(root / rel)
            os.symlink(new, root / rel)
            changed.add(rel)
    return changed


def _recompile(tmp: Path, root: Path, final_root: Path, xy: str, changed: set[str],
               files: dict[str, Any]) -> set[str]:
    """Rewritten .py files would make their .pyc stale: compile them again (same Python)."""
    tag = f"cpython-{xy.replace('.', '')}"
    todo, pycs = [], set()
    for rel in sorted(changed):
        if not rel.endswith(".py"):
            continue
        d, name = os.path.split(rel)
        mine = {p for p in files if p.startswith(os.path.join(d, "__pycache__", name[:-3] + f".{tag}"))}
        if mine:
            todo.append(str(root / rel))
            pycs |= mine
    if todo:
        py = tmp / "stack" / "bin" / f"python{xy}"
        r = compile_paths(str(py), todo, strip=str(root), prepend=str(final_root), force=True)
        if r.returncode != 0:
            raise StageError(f"recompiling relocated modules failed: {r.stdout[-300:]}",
                             BuildError.exit_code)
    return pycs


def activate_script(final: Path, layer: bool) -> str:
    """The staged copy's `activate`: every path goes through the sh quoting rule, so a --to
    folder holding `"`, `$()`, backticks or spaces is a path, never a command."""
    from sitestack.core.templates import render_file

    bins = f"{final}/layer/bin:{final}/stack/bin" if layer else f"{final}/stack/bin"
    text = render_file("sitestack.scale", "stage-activate.sh",
                       {"BINS": bins, "STAGED": str(final), "PREFIX": f"{final}/stack"})
    if layer:
        text += render_file("sitestack.scale", "stage-activate-layer.sh",
                            {"LAYER": f"{final}/layer"})
    return text + "hash -r 2>/dev/null || true\n"


