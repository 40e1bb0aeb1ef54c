from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("pack", help="pack a stack, clone or layer (with its stack) into one archive")
    p.add_argument("target", metavar="TARGET", help="NAME[/VERSION], a clone path, or a layer path")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", help="archive file to write")
    out.add_argument("--publish", action="store_true",
                     help="write ROOT/archives/NAME/VERSION.tar.zst, which `stage NAME/VERSION` then reads "
                          "instead of every file of the stack (one large read of the shared filesystem)")
    p.add_argument("--format", dest="fmt", choices=("tar.zst", "squashfs"), default=None,
                   help="default: from the file name (.sqfs/.squashfs), else tar.zst")
    p.add_argument("--layer", help="a layer to pack together with TARGET's stack")
    p.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from sitestack.core.layout import resolve_root
    from sitestack.output import emit_json, human_bytes
    from sitestack.scale.pack import pack

    root = resolve_root(args.root)
    if args.publish:
        from sitestack.errors import UsageError
        from sitestack.site.registry import Site

        if args.layer or args.fmt == "squashfs":
            raise UsageError("--publish packs a stack alone, as tar.zst")
        rec = Site(root).get(args.target)
        args.output = str(root.archive(rec.name, rec.version))
    fmt = args.fmt or ("squashfs" if args.output.endswith((".sqfs", ".squashfs")) else "tar.zst")
    header = pack(args.target, root, args.output, fmt=fmt, layer=args.layer, level=args.level,
                  make_parent=args.publish)
    size = os.path.getsize(args.output)
    if args.json:
        emit_json({**header.to_json(), "archive": os.path.abspath(args.output), "format": fmt,
                   "size": size, "id": header.dirname})
    else:
        print(f"packed {header.name}/{header.version} ({header.kind}, {header.files} files, "
              f"{human_bytes(header.bytes)}) into {args.output} ({human_bytes(size)}, {fmt}); "
              f"id {header.dirname}")
    return 0
