"""Stage a stack (and a layer) onto node-local storage under MPI, checksummed and atomic.

Rank 0 alone reads the shared filesystem (the stack, or a packed archive) and broadcasts
the archive in chunks to one leader per node (mpibcast.py). Each leader extracts into a temp
folder, checking every file's sha256 against the manifest as it comes from the stream
(unpack.py), relocates to DIR/sitestack/<name>-<version>-<hash>, writes a marker and renames
the folder into place. The leaders' results are gathered on every rank, so every rank exits
with the same code and prints the same activate path.

Test seam (documented in docs/scaling.md, test-only): SITESTACK_STAGE_NODE_MAP="0:a,1:a,2:b"
names each rank's node instead of MPI_COMM_TYPE_SHARED; `{node}` in --to becomes that name.

Length (over ~400 lines, on purpose): this is one MPI protocol -- elect leaders, broadcast,
extract, verify, relocate, agree on one exit code -- and each step needs the rank bookkeeping
of the others to be read; the heavy parts already live in unpack, mpibcast and safepath.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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
from sitestack.core.layout import SiteRoot
from sitestack.core.publish import clear_stale, make_temp, publish
from sitestack.core.relocate import relocate_map, retarget
from sitestack.errors import (
    BuildError,
    ConflictError,
    SitestackError,
    StageError,
    UsageError,
    VerifyError,
)
from sitestack.scale.mpibcast import (
    Channel,
    ChannelReader,
    Nodes,
    idle_barrier,
    load_mpi,
    split_nodes,
)
from sitestack.scale.pack import Header, stream_chunks
from sitestack.scale.unpack import Unpacked, read_header, unpack_squashfs, unpack_tar

STAGE_DIR = "sitestack"
META = ".sitestack-stage"
MARKER = "verified.json"
DEFAULT_CHUNK = 64 << 20  # far below MPI's 2 GiB count limit, and bounded memory per rank


@dataclass(frozen=True)
class NodeResult:
    node: str
    host: str
    status: str  # "staged" | "reused" | "failed"
    path: str
    error: str = ""
    code: int = 0


@dataclass(frozen=True)
class StageResult:
    id: str
    activate: str
    path: str
    node: str
    status: str  # this rank's node: "staged" | "reused"
    nodes: tuple[NodeResult, ...]
    ranks: int
    bytes: int
    files: int
    seconds: float
    rank: int = 0  # this process's MPI rank: rank 0 prints the job's summary

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["rank"]  # which rank renders the text, not part of the job's result (same JSON on every rank)
        d["nodes"] = [asdict(n) for n in self.nodes]
        return d


# --- one node ---------------------------------------------------------------------------------

def base_dir(to: str, node: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(to.replace("{node}", node)))) / STAGE_DIR


def is_verified(final: Path, header: Header) -> bool:
    try:
        data = json.loads((final / META / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(data.get("content_hash") == header.content_hash)


def _failure(nodes: Nodes, path: Path, e: BaseException) -> NodeResult:
    host = socket.gethostname()
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        msg, code = f"disk full in {path.parent}: {e.strerror}", ConflictError.exit_code
    elif isinstance(e, SitestackError):
        msg, code = str(e), e.exit_code
    elif isinstance(e, OSError):
        msg, code = f"{e.strerror or e} ({e.filename or path})", ConflictError.exit_code
    else:
        msg, code = f"{type(e).__name__}: {e}", SitestackError.exit_code
    return NodeResult(nodes.name, host, "failed", str(path), msg, code)


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
    checked (unpack.check_received); a link path is still checked to be a plain relative
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


def _prepare_node(nodes: Nodes, to: str, header: Header, extra_bytes: int
                  ) -> tuple[str, Path, contextlib.ExitStack]:
    """('have' | 'need' | 'failed:...', final path, held lock) for this node."""
    base = base_dir(to, nodes.name)
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


def _extract(ch: Channel, fmt: str, tmp: Path) -> Unpacked:
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


def _lead(mpi: Any, nodes: Nodes, to: str, header: Header, fmt: str,
          source: Iterator[bytes] | None, archive_bytes: int) -> NodeResult:
    host = socket.gethostname()
    final = base_dir(to, nodes.name) / header.dirname
    state, lock = "failed", contextlib.ExitStack()
    failure: NodeResult | None = None
    try:
        state, final, lock = _prepare_node(nodes, to, header, archive_bytes if fmt == "squashfs" else 0)
    except Exception as e:
        failure = _failure(nodes, final, e)
    with lock:
        comm = nodes.leaders
        is_root = comm is None or comm.rank == 0
        if comm is None and state != "need":
            return failure or NodeResult(nodes.name, host, "reused", str(final))
        if comm is not None:  # only leaders that need the bytes (and rank 0) take part
            if not comm.allreduce(1 if state == "need" else 0):
                return failure or NodeResult(nodes.name, host, "reused", str(final))
            comm = comm.Split(0 if state == "need" or is_root else mpi.UNDEFINED, comm.rank)
            if comm == mpi.COMM_NULL:
                return failure or NodeResult(nodes.name, host, "reused", str(final))
        ch = Channel(mpi, comm, source if is_root else None)
        try:
            if state != "need":
                return failure or NodeResult(nodes.name, host, "reused", str(final))
            tmp = make_temp(final.parent, f".tmp-{header.dirname}-", 0o700)
            try:
                u = _extract(ch, fmt, tmp)
                if u.header.content_hash != header.content_hash:
                    raise VerifyError("archive content does not match its header")
                finish_copy(tmp, final, u)
                publish(tmp, final)
            except BaseException:
                rmtree(tmp)
                raise
            return NodeResult(nodes.name, host, "staged", str(final))
        except Exception as e:
            return _failure(nodes, final, e)
        finally:
            ch.drain()
            if comm is not None and comm is not nodes.leaders:
                comm.Free()


# --- the whole job ----------------------------------------------------------------------------

def _prepare_source(target: str | None, layer: str | None, archive: str | None, root: SiteRoot,
                    chunk: int) -> tuple[Header, str, Iterator[bytes], int]:
    if archive:
        path = Path(archive)
        if not path.is_file():
            raise UsageError(f"archive {archive} does not exist")
        fmt, header = read_header(path)
        if target:
            _check_archive_holds(target, layer, header, path, root)
        size = path.stat().st_size

        def read() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while data := f.read(chunk):
                    yield data

        return header, fmt, read(), size
    if not target:
        raise UsageError("give a TARGET (stack, clone or layer) or --archive")
    if not layer and (published := _published_archive(target, root)) is not None:
        return _prepare_source(None, None, str(published), root, chunk)
    header, chunks = stream_chunks(target, root, layer, chunk)
    return header, "tar.zst", chunks, 0


def _check_archive_holds(target: str, layer: str | None, header: Header, path: Path,
                         root: SiteRoot) -> None:
    """TARGET with --archive: the archive must hold exactly TARGET (and --layer), as built.

    Staging something else under the name the job asked for would run other code than the
    job script says; so it is refused, not just reported (docs/security.md)."""
    from sitestack.scale.pack import resolve

    expected, _parts = resolve(target, root, layer)
    if header.content_hash != expected.content_hash:
        raise UsageError(
            f"archive {path} holds {header.name}/{header.version} ({header.short_hash}), not "
            f"{expected.name}/{expected.version} ({expected.short_hash}) as built",
            hint="give only --archive to stage what it holds, or pack TARGET again")


def _check_to(to: str) -> None:
    from sitestack.core.relocate import check_target

    check_target(to, "--to", "stage to a folder without quotes, backslashes or control characters")


def _published_archive(target: str, root: SiteRoot) -> Path | None:
    """The stack's archive from `pack --publish`, if it holds exactly this stack.

    One large file instead of thousands of small ones: on a parallel filesystem that is the
    difference between one metadata operation and ten thousand. The archive counts only if
    its content hash is the stack's own (every file is verified against it when extracted).
    """
    from sitestack.scale.pack import resolve
    from sitestack.site.registry import Site

    if target.startswith(("/", ".", "~")):
        return None
    try:
        rec = Site(root).get(target)
    except SitestackError:
        return None
    path = root.archive(rec.name, rec.version)
    if not path.is_file():
        return None
    _fmt, header = read_header(path)
    expected, _parts = resolve(rec.ref, root)
    if header.content_hash != expected.content_hash:
        print(f"sitestack: ignoring {path}: it does not hold {rec.ref} as built", file=sys.stderr)
        return None
    print(f"sitestack: reading the published archive {path}", file=sys.stderr)
    return path


def stage(target: str | None, *, to: str, root: SiteRoot, layer: str | None = None,
          archive: str | None = None, chunk: int | None = None, use_mpi: bool = True,
          quiet: bool = False) -> StageResult:
    """`sitestack stage`: every node gets one verified copy; the result of this rank."""
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    if not 0 < chunk < (1 << 31):
        raise UsageError("--chunk-size must be between 1 byte and 2 GiB")
    mpi = load_mpi(use_mpi)
    try:
        return _stage(mpi, target, to, root, layer, archive, chunk, quiet)
    except SitestackError:
        raise
    except BaseException:
        # A bug on one rank would leave the others waiting in a collective: end the job.
        if mpi is not None and mpi.COMM_WORLD.size > 1:
            import traceback

            traceback.print_exc()
            mpi.COMM_WORLD.Abort(1)
        raise


def _stage(mpi: Any, target: str | None, to: str, root: SiteRoot, layer: str | None, archive: str | None,
           chunk: int, quiet: bool) -> StageResult:
    t0 = time.monotonic()
    _check_to(to)
    world = mpi.COMM_WORLD if mpi is not None else None
    rank = world.rank if world is not None else 0
    msg: tuple[Any, ...] = ()
    source: Iterator[bytes] | None = None
    if rank == 0:
        try:
            header, fmt, source, size = _prepare_source(target, layer, archive, root, chunk)
            msg = ("ok", header.to_json(), fmt, size)
        except SitestackError as e:
            msg = ("error", e.exit_code, str(e), e.hint)
        except OSError as e:
            msg = ("error", UsageError.exit_code, f"cannot read {e.filename or target}: {e.strerror}", None)
    if world is not None:
        msg = world.bcast(msg, root=0)
    if msg[0] == "error":
        raise StageError(msg[2], msg[1], msg[3])
    header, fmt, size = Header.from_json(msg[1]), msg[2], msg[3]
    nodes = split_nodes(mpi, world)
    if rank == 0 and not quiet:
        print(f"sitestack: staging {header.name}/{header.version} ({header.kind}, {header.files} "
              f"files, {header.bytes >> 20} MiB) to {to}", file=sys.stderr, flush=True)
    mine = _lead(mpi, nodes, to, header, fmt, source, size) if nodes.leader else None
    if world is not None:
        idle_barrier(world)
    results = world.allgather(mine) if world is not None else [mine]
    done = tuple(r for r in results if r is not None)
    failed = [r for r in done if r.status == "failed"]
    if failed:
        what = "; ".join(f"node {r.node} (host {r.host}): {r.error}" for r in failed)
        raise StageError(f"staging failed on {len(failed)} of {len(done)} node(s): {what}",
                         failed[0].code)
    final = base_dir(to, nodes.name) / header.dirname
    status = next((r.status for r in done if r.node == nodes.name), "staged")
    return StageResult(header.dirname, str(final / "activate"), str(final), nodes.name, status,
                       done, world.size if world is not None else 1, header.bytes, header.files,
                       round(time.monotonic() - t0, 3), rank)


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
