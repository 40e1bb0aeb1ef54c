"""One node's part of `sitestack stage`: its lock, what it has, what it does with the bytes.

stage.py runs the MPI choreography (who reads, who receives, one exit code for all). A node
leader here takes the lock on the copy's id, reuses a copy of the same content (extracted or
mounted), clears what killed stages left, checks its free space and its tools, and then
receives: a tar.zst is extracted into a temp folder (unpack.py), relocated and renamed into
place (staged.py); an image is written and checked chunk by chunk as it arrives (image.py),
checked again from disk, its listing checked, and mounted read-only on the copy's path
(mount.py) -- or, where it cannot be mounted and --mount=auto allows, extracted there with
unsquashfs. Under DIR/sitestack: `<id>/` (the copy or the mount point), `.images/<id>.sqfs`
(the verified image of a mount), `.locks/<id>.lock`, and `.tmp-*` temps of running stages.

Test seam (test-only, docs/scaling.md): SITESTACK_STAGE_TEST_KILL=POINT makes a stage send
itself SIGKILL at POINT (receiving, received, placed, mkdir, mounted): a real kill -9 at a known
step of receiving and mounting an image.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sitestack.core.fsutil import file_lock, rmtree
from sitestack.core.publish import clear_stale, make_temp, publish, temp_name
from sitestack.errors import ConflictError, SitestackError, ToolMissingError, VerifyError
from sitestack.scale.image import Image, check_file, receive
from sitestack.scale.mount import (
    check_listing,
    missing_tool,
    mount_image,
    mounted,
    mounters,
    mounts,
    unmount,
)
from sitestack.scale.mpibcast import ChunkReader
from sitestack.scale.pack import Header
from sitestack.scale.staged import META, base_dir, finish_copy, is_verified
from sitestack.scale.unpack import Unpacked, unpack_tar

IMAGES = ".images"
LOCKS = ".locks"
KILL_ENV = "SITESTACK_STAGE_TEST_KILL"


def _test_kill(point: str) -> None:
    if os.environ.get(KILL_ENV) == point:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _killed_midway(chunks: Iterator[memoryview]) -> Iterator[memoryview]:
    for i, c in enumerate(chunks):
        if i == 1:
            _test_kill("receiving")  # the first chunk is written, the rest not
        yield c


@dataclass(frozen=True)
class NodeResult:
    node: str
    host: str
    status: str  # "staged" | "reused" | "failed"
    path: str
    error: str = ""
    code: int = 0
    how: str = ""  # "extracted" | "kernel" | "helper" | "squashfuse_ll" | "squashfuse"
    note: str = ""


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


def _kind(fstype: str) -> str:
    return fstype[len("fuse."):] if fstype.startswith("fuse.") else "kernel"


class NodeCopy:
    """This node's copy of one staged id, from `prepare` (under its lock) to `finish`.

    `mount` is None (extract), "yes" or "auto"; `image` is the table of the image being
    broadcast (None for a tar.zst). Used as a context manager: leaving it releases the lock
    and removes whatever a failed step left (temps, a half-placed image, an empty mount point).
    """

    def __init__(self, node: str, to: str, header: Header, image: Image | None,
                 mount: str | None, helper: str | None) -> None:
        self.node, self.header, self.image, self.mount, self.helper = node, header, image, mount, helper
        self.base = base_dir(to, node)
        self.final = self.base / header.dirname
        self.placed = self.base / IMAGES / f"{header.dirname}.sqfs"
        self.lock = contextlib.ExitStack()
        self.how = ""
        self.note = ""
        self.temps: list[Path] = []
        self.unpacked: Unpacked | None = None

    def __enter__(self) -> NodeCopy:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            for p in self.temps:
                with contextlib.suppress(FileNotFoundError):
                    rmtree(p)
            with contextlib.suppress(OSError):
                (self.base / IMAGES).rmdir()  # only if no image stays (none is mounted)
        finally:
            self.lock.close()

    def result(self, status: str) -> NodeResult:
        return NodeResult(self.node, socket.gethostname(), status, str(self.final), how=self.how,
                          note=self.note)

    # --- before the broadcast ------------------------------------------------------------------

    def prepare(self) -> bool:
        """Whether this node needs the bytes (False: it has this very content already)."""
        base, final, h = self.base, self.final, self.header
        base.mkdir(parents=True, exist_ok=True)
        self.lock.enter_context(file_lock(base / LOCKS / f"{h.dirname}.lock", what=str(final)))
        if (m := mounted(final)) is not None:
            if is_verified(final, h):  # the marker inside the mounted image
                self.how = _kind(m.fstype)
                return False
            unmount(final, self.helper)  # other content, or a FUSE mount whose daemon is gone
        if is_verified(final, h):
            self.how = "extracted"
            return False
        if os.path.lexists(final):
            # Our own namespace, under our lock, but not a copy verified as this content (a copy
            # is renamed into place, or mounted, only once it is checked): never used, replaced.
            rmtree(final)
        clear_stale(base, f".tmp-{h.dirname}-", locked=True)  # we hold the lock: killed stages
        clear_stale(base / IMAGES, f".tmp-{h.dirname}-", locked=True)
        with contextlib.suppress(FileNotFoundError):
            self.placed.unlink()  # an image a killed stage placed but never mounted: sent again
        self.how = self._choose()
        st = os.statvfs(base)
        need = (self.image.size if self.image else 0) + (h.bytes if self.how != "mount" else 0)
        free = st.f_bavail * st.f_frsize
        if free < need:
            raise OSError(errno.ENOSPC, f"need {need >> 20} MiB, {free >> 20} MiB free", str(base))
        return True

    def _choose(self) -> str:
        if self.image is None:
            return "extract"
        if not shutil.which("unsquashfs"):
            raise ToolMissingError("unsquashfs is needed to check and stage a squashfs image "
                                   "(Debian/Ubuntu package: squashfs-tools)")
        if self.mount is None:
            return "unsquashfs"
        if mounters(self.helper):
            return "mount"
        if self.mount == "auto":
            self.note = "no squashfuse"
            return "unsquashfs"
        raise missing_tool()

    # --- while it arrives (the broadcast's consumer thread) ----------------------------------

    def receive(self, chunks: Iterator[memoryview]) -> None:
        dirname = self.header.dirname
        if self.image is None:
            tmp = make_temp(self.base, f".tmp-{dirname}-", 0o700)
            self.temps.append(tmp)
            self.unpacked = unpack_tar(ChunkReader(chunks), tmp)  # type: ignore[arg-type]
            return
        images = self.base / IMAGES
        images.mkdir(mode=0o700, exist_ok=True)
        tmp = images / temp_name(f".tmp-{dirname}-")
        self.temps.append(tmp)
        receive(_killed_midway(chunks) if os.environ.get(KILL_ENV) else chunks, tmp, self.image)
        _test_kill("received")

    # --- after it -------------------------------------------------------------------------------

    def finish(self) -> NodeResult:
        if self.image is None:
            u, tmp = self.unpacked, self.temps[-1]
            assert u is not None
            if u.header.content_hash != self.header.content_hash:
                raise VerifyError("archive content does not match its header")
            finish_copy(tmp, self.final, u)
            publish(tmp, self.final)
            self.how = "extracted"
            return self.result("staged")
        from concurrent.futures import ThreadPoolExecutor

        tmp = self.temps[-1]
        with ThreadPoolExecutor(1) as one:  # the listing (unsquashfs) beside the hashing threads
            listing = one.submit(check_listing, tmp, self.image.mount)
            check_file(tmp, self.image)  # again as a whole, from this node's disk
            listing.result()
        self.temps.append(self.placed)  # removed again if anything below fails
        os.replace(tmp, self.placed)
        _test_kill("placed")
        if self.how == "mount":
            self._mount()
        else:
            self._unsquash()
        return self.result("staged")

    def _mount(self) -> None:
        final = self.final
        os.mkdir(final, 0o755)
        _test_kill("mkdir")
        try:
            self.how = mount_image(self.placed, final, self.helper)
            _test_kill("mounted")
            if not is_verified(final, self.header):
                raise VerifyError(f"the mounted image does not hold {self.header.dirname}")
        except BaseException:
            with contextlib.suppress(SitestackError, OSError):
                unmount(final, self.helper)
            if mounted(final) is None:
                with contextlib.suppress(OSError):
                    os.rmdir(final)
            raise
        self.temps.remove(self.placed)  # it stays: it is what is mounted

    def _unsquash(self) -> None:
        tmp = self.base / temp_name(f".tmp-{self.header.dirname}-")
        self.temps.append(tmp)
        r = subprocess.run(["unsquashfs", "-no-xattrs", "-quiet", "-no-progress", "-d", str(tmp),
                            str(self.placed)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            err = (r.stderr or r.stdout).strip()
            if "No space left" in err:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            raise VerifyError(f"unsquashfs failed: {err[-300:]}")
        if not is_verified(tmp, self.header):
            raise VerifyError(f"the image does not hold {self.header.dirname}")
        publish(tmp, self.final)
        self.how = "extracted"


@dataclass(frozen=True)
class UnstageResult:
    removed: tuple[str, ...]
    kept: tuple[str, ...]


def unstage(to: str, node: str | None = None, ident: str | None = None,
            helper: str | None = None) -> UnstageResult:
    """Unmount and remove what stage put under DIR/sitestack (all of it, or one id); nothing
    else. What a killed stage left (temps, a placed image, an empty mount point, a mount) is
    stage's too: a copy's id has its lock file, which stage takes before it makes anything."""
    base = base_dir(to, node or socket.gethostname())
    if not base.is_dir():
        return UnstageResult((), ())
    locks = base / LOCKS
    known = {p.name[: -len(".lock")] for p in locks.glob("*.lock")} if locks.is_dir() else set()
    real = os.path.realpath(base)
    here = {os.path.basename(p) for p in mounts() if os.path.dirname(p) == real}
    removed, kept, problems = [], [], []
    for name in sorted(os.listdir(base)):
        entry = base / name
        if ident and name not in (ident, IMAGES) and not name.startswith(f".tmp-{ident}-"):
            continue
        ours = (name in known or name.startswith(".tmp-") or name in (LOCKS, IMAGES)
                or (name not in here and (entry / META).is_dir()))
        if not ours:
            kept.append(str(entry))
            continue
        if name == LOCKS:
            continue  # last: stages take these locks
        targets = [entry]
        if name == IMAGES and ident:
            targets = [p for p in entry.iterdir()
                       if p.name == f"{ident}.sqfs" or p.name.startswith(f".tmp-{ident}-")]
        try:
            if name in here:
                unmount(entry, helper)
            for p in targets:
                with contextlib.suppress(FileNotFoundError):  # another rank on this node was faster
                    rmtree(p)
                removed.append(str(p))
        except (SitestackError, OSError) as e:
            problems.append(str(e))
    if locks.is_dir():
        for p in [locks] if not ident else [locks / f"{ident}.lock"]:
            with contextlib.suppress(FileNotFoundError):
                rmtree(p)
                removed.append(str(p))
    with contextlib.suppress(OSError):
        base.rmdir()
    if problems:
        raise ConflictError("; ".join(problems), hint="a process may still use the staged copy")
    return UnstageResult(tuple(removed), tuple(kept))
