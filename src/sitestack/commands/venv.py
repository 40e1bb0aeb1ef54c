"""sitestack venv PATH: a layer on a stack, in milliseconds (start-up time is benchmarked).

`quick_args` parses the usual command lines without argparse (sitestack/quickargs.py): it
returns what argparse would, or None for anything else, and the CLI then asks argparse.
Keep its tables in step with `register`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace
    from typing import Any

# register's options by their exact spelling: flags (store_true) and options with a value.
FLAGS = {"--no-inherit": "no_inherit", "--user-site": "user_site", "--json": "json", "--kernel": "kernel"}
VALUES = {"--stack": "stack", "--prompt": "prompt", "--root": "root"}  # --root: the CLI adds it


def register(sub: Any) -> None:
    p = sub.add_parser("venv", help="make a layer (a venv) on a stack: the loaded one by default")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--stack", metavar="NAME[/VERSION]",
                   help="stack to sit on (default: the loaded module, then the root's default)")
    p.add_argument("--no-inherit", action="store_true",
                   help="cut the layer off from the stack's packages (include-system-site-packages = false)")
    p.add_argument("--user-site", action="store_true",
                   help="let the layer see the per-version user base (off by default)")
    p.add_argument("--prompt", help="shell prompt name (default: the folder name)")
    p.add_argument("--kernel", action="store_true",
                   help="also register the layer as a Jupyter kernel (as `sitestack kernel add PATH`)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def quick_args(argv: list[str], root: str | None) -> SimpleNamespace | None:
    """The namespace argparse makes of `sitestack [--root R] venv ARGV`, or None where this
    plain walk is not sure to agree with it (then argparse decides)."""
    from sitestack.quickargs import parse

    return parse(argv, {"root": root, "command": "venv", "path": None, "stack": None, "prompt": None,
                        "no_inherit": False, "user_site": False, "json": False, "kernel": False,
                        "func": run},
                 flags=FLAGS, values=VALUES, positional="path")


def run(args: argparse.Namespace) -> int:
    from sitestack.user.layer import choose_stack, create_layer

    rec = choose_stack(args.stack, args.root)
    made = create_layer(args.path, rec, inherit=not args.no_inherit, user_site=args.user_site,
                        prompt=args.prompt)
    kernel = None
    if args.kernel:
        from sitestack.user.kernels import add_kernel

        kernel = add_kernel(str(made.path))
    if args.json:
        from sitestack.output import emit_json

        emit_json({"path": str(made.path), "stack": made.stack, "prefix": str(made.prefix),
                   "inherit": made.inherit, "user_site": made.user_site, "pip": made.pip,
                   **({"kernel": kernel.to_json()} if kernel else {})})
        return 0
    print(f"made {made.path} on {made.stack}" + ("" if made.inherit else " (not inheriting)"))
    if kernel:
        print(f"kernel: {kernel.name} ({kernel.display_name})")
    print(f"activate: source {made.path}/bin/activate")
    return 0
