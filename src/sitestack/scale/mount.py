"""Mount a staged squashfs image read-only, find such mounts, unmount them.

Who may mount what: root mounts with the kernel (`mount -t squashfs -o loop`); a site may
name a setuid helper (`sitestack config stage_mount_helper PATH`, called `HELPER IMAGE DIR`
to mount and `HELPER -u [-z] DIR` to unmount) that does the kernel mount for users; else
the user mounts with `squashfuse_ll` (multithreaded) or `squashfuse` through `fusermount3`.
Each is tried in that order until one works. Every mount is read-only, nosuid and nodev.

Nothing about a mount is taken from a file a stage wrote: the kernel's own table
(/proc/self/mountinfo) says what is mounted where, and with which filesystem.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sitestack.core import safepath
from sitestack.errors import ConflictError, ToolMissingError, VerifyError

FUSE_PACKAGE = "squashfuse"  # the Debian/Ubuntu package of squashfuse_ll and squashfuse
TOP = {"stack", "layer", "activate", ".sitestack-stage"}  # what a staged copy holds
TIMEOUT = 120


@dataclass(frozen=True)
class Mounted:
    path: str
    fstype: str  # "squashfs" (kernel or helper) | "fuse.squashfuse_ll" | "fuse.squashfuse" | ...


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mounts() -> dict[str, Mounted]:
    """Every mount point of this mount namespace (the last mount on a path wins)."""
    out: dict[str, Mounted] = {}
    with open("/proc/self/mountinfo", "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
            left, sep, right = line.partition(" - ")
            fields = left.split(" ")
            if not sep or len(fields) < 5:
                continue
            path = _unescape(fields[4])
            out[path] = Mounted(path, right.split(" ", 1)[0])
    return out


def mounted(path: Path) -> Mounted | None:
    """What is mounted on `path` itself (its folder resolved as the kernel records it)."""
    real = os.path.join(os.path.realpath(path.parent), path.name)
    return mounts().get(real)


def mounters(helper: str | None) -> list[tuple[str, list[str]]]:
    """(kind, command before IMAGE DIR) that this caller may mount with, best first."""
    out: list[tuple[str, list[str]]] = []
    if os.geteuid() == 0 and (exe := shutil.which("mount")):
        out.append(("kernel", [exe, "-t", "squashfs", "-o", "ro,nosuid,nodev,loop"]))
    if helper and os.access(helper, os.X_OK):
        out.append(("helper", [helper]))
    if os.geteuid() == 0 or shutil.which("fusermount3"):  # a user's FUSE mount goes through it
        for name in ("squashfuse_ll", "squashfuse"):
            if exe := shutil.which(name):
                out.append((name, [exe, "-o", "ro,nosuid,nodev"]))
    return out


def missing_tool() -> ToolMissingError:
    why = ("squashfuse_ll or squashfuse" if shutil.which("fusermount3") or os.geteuid() == 0
           else "fusermount3 (Debian package fuse3)")
    return ToolMissingError(f"mounting the image as a user needs {why}, which is not installed "
                            f"(Debian/Ubuntu package: {FUSE_PACKAGE}); or stage with "
                            "--mount=auto, which extracts the image where it cannot be mounted")


def mount_image(image: Path, at: Path, helper: str | None) -> str:
    """Mount `image` read-only on the empty folder `at`; the kind of mount that worked."""
    tried = []
    for kind, argv in mounters(helper):
        # stdout/stdin are not the caller's: a FUSE daemon that kept mpiexec's pipes open
        # would hold the job's output open until it is unmounted.
        r = subprocess.run([*argv, str(image), str(at)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=TIMEOUT)
        if r.returncode == 0 and mounted(at) is not None:
            return kind
        tried.append(f"{kind}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
    if not tried:
        raise missing_tool()
    raise ConflictError(f"cannot mount {image} on {at} ({'; '.join(tried)})")


def unmount(at: Path, helper: str | None) -> None:
    """Unmount `at` (a lazy unmount is the last resort: it detaches a busy mount now and
    frees it when its last user is gone). Raises ConflictError if it stays mounted."""
    m = mounted(at)
    if m is None:
        return
    p = str(at)
    if os.geteuid() == 0:
        tries = [["umount", p], ["umount", "-l", p]]
    elif m.fstype.startswith("fuse"):
        tries = [["fusermount3", "-u", p], ["fusermount3", "-u", "-z", p]]
    elif helper:
        tries = [[helper, "-u", p], [helper, "-u", "-z", p]]
    else:
        tries = [["umount", p], ["umount", "-l", p]]  # a `user` mount of the site's fstab
    err = ""
    for argv in tries:
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=TIMEOUT)
            err = r.stderr.strip()
        except OSError as e:
            err = f"{argv[0]}: {e.strerror}"
        if mounted(at) is None:
            return
    raise ConflictError(f"cannot unmount {p}: {err or 'still mounted'}")


def check_listing(image: Path, mount: str) -> None:
    """Refuse, before it is mounted, an image holding what no staged copy holds: devices,
    FIFOs, sockets, setuid/setgid files, a top-level entry other than a staged copy's, or a
    symlink that leaves the copy (absolute links may name only `mount`, the path the image was
    relocated for). The listing is squashfs-tools' own (`unsquashfs -lln`)."""
    exe = shutil.which("unsquashfs")
    if exe is None:
        raise ToolMissingError("unsquashfs is needed to check the image (Debian/Ubuntu package: "
                               "squashfs-tools)")
    r = subprocess.run([exe, "-lln", "-d", "", str(image)], capture_output=True, timeout=TIMEOUT)
    if r.returncode != 0:
        raise VerifyError(f"image {image} cannot be listed: the image is corrupt "
                          f"({r.stderr.decode(errors='replace').strip()[-200:]})")
    links: dict[str, str] = {}
    for raw in r.stdout.decode("utf-8", "surrogateescape").splitlines():
        fields = raw.split(None, 5)
        mode = fields[0] if fields else ""
        if len(mode) != 10 or mode[0] not in "-dlcbps":
            raise VerifyError(f"image {image} has a listing line that does not parse: {raw[:80]!r}")
        if mode[0] not in "-dl":
            raise VerifyError(f"unsafe image: device or special file {raw.split()[-1]}")
        if len(fields) < 6 or not fields[5].startswith("/"):
            if len(fields) == 5 and mode[0] == "d":
                continue  # the root folder itself
            raise VerifyError(f"image {image} has a listing line that does not parse: {raw[:80]!r}")
        if set(mode) & set("sStT"):
            raise VerifyError(f"unsafe image: setuid, setgid or sticky file {fields[5]}")
        name = fields[5][1:]
        if mode[0] == "l":
            if name.count(" -> ") != 1:
                raise VerifyError(f"image {image}: cannot tell a symlink's name from its target: "
                                  f"{name!r}")
            name, target = name.split(" -> ")
            links[name] = target
        parts = name.split("/")
        if "" in parts or "." in parts or ".." in parts or "\0" in name:  # core.safepath's rule, inline: 10^5 names
            raise VerifyError(f"unsafe image: path {name!r} is not a plain relative path")
        if parts[0] not in TOP:
            raise VerifyError(f"unsafe image: {name} is not part of a staged copy")
    safepath.check_links(links, {mount: ""}, what="image")
