"""What rank 0 of `sitestack stage` broadcasts, and where it reads it from.

One large read of the shared filesystem instead of thousands of small ones: `--archive FILE`,
else the stack's published image for this --to (`pack --publish --format squashfs --to DIR`)
or its published archive (`pack --publish`), used only if they hold exactly the stack as built;
else the stack's files, packed on the fly. `--mount` needs an image: where there is none for
this --to, rank 0 makes one on the fly (image.make_image) from the archive or the files.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sitestack.core.layout import SiteRoot
from sitestack.errors import SitestackError, UsageError
from sitestack.scale.image import Image, make_image, mount_path, read_header, read_image
from sitestack.scale.mpibcast import file_source, iter_source
from sitestack.scale.pack import STREAM_LEVEL, Header, resolve, stream_chunks
from sitestack.scale.staged import base_dir


@dataclass(frozen=True)
class Source:
    header: Header
    image: Image | None  # the table of the image sent; None for a tar.zst
    fill: Callable[[memoryview], int]  # rank 0's reader (mpibcast.pump)


def open_source(target: str | None, *, layer: str | None, archive: str | None, root: SiteRoot,
                chunk: int, mount: str | None, to: str, stack: contextlib.ExitStack) -> Source:
    """The source of this stage; files it opens or makes are closed or removed by `stack`."""
    if archive:
        return _archive(Path(archive), target, layer, root, chunk, mount, to, stack)
    if not target:
        raise UsageError("give a TARGET (stack, clone or layer) or --archive")
    if not layer and (published := _published(target, root, mount, to)) is not None:
        return _archive(published, None, None, root, chunk, mount, to, stack)
    header, chunks = stream_chunks(target, root, layer, chunk)
    if mount:
        return _made_image(header, chunks, to, stack)
    return Source(header, None, iter_source(chunks))


def _archive(path: Path, target: str | None, layer: str | None, root: SiteRoot, chunk: int,
             mount: str | None, to: str, stack: contextlib.ExitStack) -> Source:
    if not path.is_file():
        raise UsageError(f"archive {path} does not exist")
    fmt, header = read_header(path)
    if target:
        check_archive_holds(target, layer, header, path, root)
    f = stack.enter_context(open(path, "rb", buffering=0))  # noqa: SIM115 (closed by `stack`)
    if fmt == "squashfs":
        img = read_image(path)
        if img.mount != mount_path(to, header):
            made_for = img.mount[: -len(f"/sitestack/{header.dirname}")]
            raise UsageError(f"image {path} is made to be mounted at {img.mount}, not under {to}",
                             hint=f"stage it with --to {made_for}, or pack it again with --to {to}")
        return Source(header, img, file_source(f, img.size))
    if mount:
        return _made_image(header, iter(lambda: f.read(chunk), b""), to, stack)
    return Source(header, None, file_source(f))


def _made_image(header: Header, tar: Iterator[bytes], to: str, stack: contextlib.ExitStack) -> Source:
    """An image made on the fly, on rank 0's node-local disk, for this --to."""
    from sitestack.core.fsutil import rmtree
    from sitestack.core.publish import clear_stale, make_temp

    base = base_dir(to, socket.gethostname())
    base.mkdir(parents=True, exist_ok=True)
    clear_stale(base, ".tmp-image-")  # of killed stages on this host
    work = make_temp(base, ".tmp-image-", 0o700)
    stack.callback(rmtree, work)
    print(f"sitestack: making a squashfs image of {header.name}/{header.version} to mount under "
          f"{to}", file=sys.stderr, flush=True)
    out = work / "image.sqfs"
    img = make_image(header, tar, out, mount_path(to, header), level=STREAM_LEVEL, work=work)
    f = stack.enter_context(open(out, "rb", buffering=0))  # noqa: SIM115 (closed by `stack`)
    return Source(header, img, file_source(f, img.size))


def check_archive_holds(target: str, layer: str | None, header: Header, path: Path,
                        root: SiteRoot) -> None:
    """TARGET with --archive: the archive must hold exactly TARGET (and --layer), as built.

    Staging something else under the name the job asked for would run other code than the
    job script says; so it is refused, not just reported (docs/security.md)."""
    expected, _parts = resolve(target, root, layer)
    if header.content_hash != expected.content_hash:
        raise UsageError(
            f"archive {path} holds {header.name}/{header.version} ({header.short_hash}), not "
            f"{expected.name}/{expected.version} ({expected.short_hash}) as built",
            hint="give only --archive to stage what it holds, or pack TARGET again")


def _published(target: str, root: SiteRoot, mount: str | None, to: str) -> Path | None:
    """The stack's published image for this --to, or its published archive, if it holds
    exactly this stack (every file of an archive is verified against the stack's manifest
    when extracted; an image is the site's own file, checked chunk by chunk on every node).
    With --mount the image comes first, without it the archive."""
    from sitestack.site.registry import Site

    if target.startswith(("/", ".", "~")):
        return None
    try:
        rec = Site(root).get(target)
    except SitestackError:
        return None
    files = [root.archive(rec.name, rec.version), root.image(rec.name, rec.version)]
    expected: Header | None = None
    for path in files[::-1] if mount else files:
        if not path.is_file():
            continue
        try:
            fmt, header = read_header(path)
            if fmt == "squashfs" and read_image(path).mount != mount_path(to, header):
                print(f"sitestack: not using {path}: it is made for another --to folder",
                      file=sys.stderr)
                continue
        except SitestackError as e:
            print(f"sitestack: ignoring {path}: {e}", file=sys.stderr)
            continue
        expected = expected or resolve(rec.ref, root)[0]
        if header.content_hash != expected.content_hash:
            print(f"sitestack: ignoring {path}: it does not hold {rec.ref} as built", file=sys.stderr)
            continue
        print(f"sitestack: reading the published {'image' if fmt == 'squashfs' else 'archive'} "
              f"{path}", file=sys.stderr)
        return path
    return None
