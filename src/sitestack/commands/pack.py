"""sitestack pack TARGET: one archive of a stack, clone or layer (scale.archive.pack_archive)."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, OneOf, Option

if TYPE_CHECKING:
    import argparse

FORMATS = ("tar.zst", "squashfs")
# quick: pack is benchmarked against `tar | zstd`, which starts in a few ms.
COMMAND = Command("pack a stack, clone or layer (with its stack) into one archive", quick=True, options=(
    Option("target", metavar="TARGET", help="NAME[/VERSION], a clone path, or a layer path"),
    OneOf(
        Option("-o", "--output", help="archive file to write"),
        Option("--publish", action="store_true",
               help="write ROOT/archives/NAME/VERSION.tar.zst (or .sqfs), which `stage NAME/VERSION` then "
                    "reads instead of every file of the stack (one large read of the shared filesystem)"),
        required=True,
    ),
    Option("--format", dest="fmt", choices=FORMATS,
           help="default: from the file name (.sqfs/.squashfs), else tar.zst"),
    Option("--layer", help="a layer to pack together with TARGET's stack"),
    Option("--level", type=int, default=3, help="zstd level (default 3)"),
    Option("--to", help="squashfs: the node-local folder `stage --mount --to DIR` will mount the image "
                        "under (its files are relocated for DIR/sitestack/ID)"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json, human_bytes
    from sitestack.scale.archive import pack_archive

    res = pack_archive(args.target, resolve_root(args.root), output=args.output, publish=args.publish,
                       fmt=args.fmt, layer=args.layer, level=args.level, to=args.to)
    if args.json:
        emit_json(res.to_json())
    else:
        h = res.header
        print(f"packed {h.name}/{h.version} ({h.kind}, {h.files} files, {human_bytes(h.bytes)}) into "
              f"{res.output} ({human_bytes(res.size)}, {res.format}); id {h.dirname}"
              + (f"; mounts at {res.mount}" if res.mount else ""))
    return 0
