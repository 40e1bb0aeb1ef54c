"""sitestack pack TARGET: one archive of a stack, clone or layer (scale.archive.pack_archive)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up counts)
if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace
    from typing import Any

FORMATS = ("tar.zst", "squashfs")
# register's options by their exact spelling, for quick_args.
FLAGS = {"--publish": "publish", "--json": "json"}
VALUES = {"-o": "output", "--output": "output", "--format": "fmt", "--layer": "layer", "--level": "level",
          "--to": "to", "--root": "root"}


def register(sub: Any) -> None:
    p = sub.add_parser("pack", help="pack a stack, clone or layer (with its stack) into one archive")
    p.add_argument("target", metavar="TARGET", help="NAME[/VERSION], a clone path, or a layer path")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", help="archive file to write")
    out.add_argument("--publish", action="store_true",
                     help="write ROOT/archives/NAME/VERSION.tar.zst (or .sqfs), which `stage NAME/VERSION` then "
                          "reads instead of every file of the stack (one large read of the shared filesystem)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default=None,
                   help="default: from the file name (.sqfs/.squashfs), else tar.zst")
    p.add_argument("--layer", help="a layer to pack together with TARGET's stack")
    p.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    p.add_argument("--to", help="squashfs: the node-local folder `stage --mount --to DIR` will mount the "
                                "image under (its files are relocated for DIR/sitestack/ID)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def quick_args(argv: list[str], root: str | None) -> SimpleNamespace | None:
    """What argparse makes of a plain `sitestack pack` line, or None (sitestack/quickargs.py):
    pack is benchmarked against `tar | zstd`, which starts in a few ms."""
    from sitestack.quickargs import choice, parse

    return parse(argv, {"root": root, "command": "pack", "target": None, "output": None, "publish": False,
                        "fmt": None, "layer": None, "level": 3, "to": None, "json": False, "func": run},
                 flags=FLAGS, values=VALUES, positional="target",
                 convert={"level": int, "fmt": choice(*FORMATS)},
                 ok=lambda ns: (ns["output"] is not None) != ns["publish"])


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
