"""One node's part of `sitestack stage`: its folder, lock and checks, the copy, `unstage`.

stage.py runs the MPI choreography (who reads, who receives, one exit code for all); what a
node leader does with the bytes it receives happens here: take the lock on the copy's id,
reuse a verified copy, clear what killed stages left, check the free space, extract into a
temp folder (unpack.py), relocate to DIR/sitestack/<name>-<version>-<hash>, write `activate`
and the marker, and rename the folder into place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.core import safepath
from sitestack.core.bytecode import compile_paths
from sitestack.core.fsutil import (
    atomic_write_json,
    atomic_write_text,
    file_lock,
    make_readonly,
    rmtree,
)
from sitestack.core.publish import clear_stale
from sitestack.core.relocate import relocate_map, retarget
from sitestack.errors import (
    BuildError,
    ConflictError,
    SitestackError,
    StageError,
    VerifyError,
)
from sitestack.scale.mpibcast import Channel, ChannelReader
from sitestack.scale.pack import Header
from sitestack.scale.unpack import Unpacked, unpack_squashfs, unpack_tar

STAGE_DIR = "sitestack"
META = ".sitestack-stage"
MARKER = "verified.json"


@dataclass(frozen=True)
class NodeResult:
    node: str
    host: str
    status: str  # "staged" | "reused" | "failed"
    path: str
    error: str = ""
    code: int = 0


def base_dir(to: str, node: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(to.replace("{node}", node)))) / STAGE_DIR


def is_verified(final: Path, header: Header) -> bool:
    try:
        data = json.loads((final / META / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(data.get("content_hash") == header.content_hash)


def failure(node: str, path: Path, e: BaseException) -> NodeResult:
    host = socket.gethostname()
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        msg, code = f"disk full in {path.parent}: {e.strerror}", ConflictError.exit_code
    elif isinstance(e, SitestackError):
        msg, code = str(e), e.exit_code
    elif isinstance(e, OSError):
        msg, code = f"{e.strerror or e} ({e.filename or path})", ConflictError.exit_code
    else:
        msg, code = f"{type(e).__name__}: {e}", SitestackError.exit_code
    return NodeResult(node, host, "failed", str(path), msg, code)


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


def prepare(node: str, to: str, header: Header, extra_bytes: int
                  ) -> tuple[str, Path, contextlib.ExitStack]:
    """('have' | 'need' | 'failed:...', final path, held lock) for this node."""
    base = base_dir(to, node)
    final = base / header.dirname
    stack = contextlib.ExitStack()
    base.mkdir(parents=True, exist_ok=True)
    stack.enter_context(file_lock(base / ".locks" / f"{header.dirname}.lock", what=str(final)))
    if is_verified(final, header):
        return "have", final, stack
    if os.path.lexists(final):
        # Our own namespace, under our lock, but not a copy verified as this content (a copy
        # is renamed into place only after its marker is written): never used, replaced.
        rmtree(final)
    clear_stale(base, f".tmp-{header.dirname}-", locked=True)  # we hold the lock: killed stages
    st = os.statvfs(base)
    free, need = st.f_bavail * st.f_frsize, header.bytes + extra_bytes
    if free < need:
        raise OSError(errno.ENOSPC, f"need {need >> 20} MiB, {free >> 20} MiB free", str(base))
    return "need", final, stack


def extract(ch: Channel, fmt: str, tmp: Path) -> Unpacked:
    if fmt == "tar.zst":
        return unpack_tar(ChannelReader(ch), tmp)  # type: ignore[arg-type]
    image = tmp / ".image.sqfs"
    with open(image, "wb") as f:
        while chunk := ch.next():
            f.write(chunk)
    try:
        return unpack_squashfs(image, tmp)
    finally:
        image.unlink()


@dataclass(frozen=True)
class UnstageResult:
    removed: tuple[str, ...]
    kept: tuple[str, ...]


def unstage(to: str, node: str | None = None, ident: str | None = None) -> UnstageResult:
    """Remove what stage put under DIR/sitestack (all of it, or one id); nothing else."""
    base = base_dir(to, node or socket.gethostname())
    removed, kept = [], []
    if not base.is_dir():
        return UnstageResult((), ())
    for entry in sorted(base.iterdir()):
        ours = (entry / META).is_dir() or entry.name.startswith(".tmp-") or entry.name == ".locks"
        if ident and entry.name != ident and not entry.name.startswith(f".tmp-{ident}-"):
            continue
        if ours:
            with contextlib.suppress(FileNotFoundError):  # another rank on this node was faster
                rmtree(entry)
            removed.append(str(entry))
        else:
            kept.append(str(entry))
    with contextlib.suppress(OSError):
        base.rmdir()
    return UnstageResult(tuple(removed), tuple(kept))
