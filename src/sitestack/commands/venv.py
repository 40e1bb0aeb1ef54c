"""sitestack venv PATH: a layer on a stack, in milliseconds (start-up time is benchmarked)."""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.options import Command, Option

if TYPE_CHECKING:
    import argparse

COMMAND = Command("make a layer (a venv) on a stack: the loaded one by default", quick=True, options=(
    Option("path", metavar="PATH"),
    Option("--stack", metavar="NAME[/VERSION]",
           help="stack to sit on (default: the loaded module, then the root's default)"),
    Option("--no-inherit", action="store_true",
           help="cut the layer off from the stack's packages (include-system-site-packages = false)"),
    Option("--user-site", action="store_true", help="let the layer see the per-version user base (off by default)"),
    Option("--prompt", help="shell prompt name (default: the folder name)"),
    Option("--kernel", action="store_true",
           help="also register the layer as a Jupyter kernel (as `sitestack kernel add PATH`)"),
    Option("--json", action="store_true"),
))


def run(args: argparse.Namespace) -> int:
    from sitestack.user.layer import create_layer
    from sitestack.user.stackchoice import choose_stack

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
