"""conda: the seed page's `conda` commands on any stack (the site's `conda` runs `sitestack conda`).

conda's command line is declared in COMMAND, as every command's options are (sitestack/options.py),
with `program="conda"`: the declaration's walk parses every line, without argparse (`conda
create --clone` is benchmarked against `sitestack clone`, and every `conda activate` in a
user's shell starts this), and says what it does not take as one `conda: error:` line.
Each subcommand calls one library function (user/condafront/) and renders its result; every
error is one `conda: error:` line (and at most one hint), never a traceback.
"""

from __future__ import annotations

import sys

from sitestack import TYPE_CHECKING
from sitestack.options import REST, Command, Option, Sub
from sitestack.user.condafront import DIALECTS

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

# What to use instead, for conda's other subcommands (exit 2, one line).
INSTEAD = {
    "init": "not needed: `module load NAME` defines conda in your shell; in a subshell or job script "
            "run eval \"$(conda shell.bash hook)\" (shell.zsh in zsh)",
    "config": "this front door reads no .condarc: where packages come from is the site's choice "
              "(conda info shows it)",
    "update": "conda install PKG=VERSION in a clone or layer of yours (the stack itself is read-only)",
    "upgrade": "conda install PKG=VERSION in a clone or layer of yours (the stack itself is read-only)",
    "search": "pip index versions PKG, or `sitestack show NAME/VERSION` for what a stack has",
    "clean": "there is nothing of the front door's to clean; uv's cache: uv cache clean",
    "export": "pip freeze in the environment, or `sitestack show NAME/VERSION` for the stack",
    "env create": "conda create --clone base -p DIR, then conda install PKG... in it",
    "env export": "pip freeze in the environment, or `sitestack show NAME/VERSION` for the stack",
    "env remove": "rm -rf the clone's folder (conda env list forgets it)",
    "env update": "conda install PKG... in the active clone or layer",
    "env config": "nothing to configure: the site chose the package source (conda info shows it)",
    "rename": "mv the clone's folder, then sitestack clone again (a clone's scripts name its path)",
    "compare": "sitestack check LAYER (broken requirements across the layer and its stack)",
    "doctor": "sitestack doctor",
}
WHAT_IT_DOES = ("it does activate, deactivate, create --clone, install, remove, list, env list, info and run "
             "(conda --help)")


def _elsewhere(words: str) -> str:
    """What `conda WORDS` says where WORDS name none of the front door's subcommands."""
    first = words.partition(" ")[0]
    shells = f"shell.{', shell.'.join(DIALECTS)}"
    if first.startswith("shell."):
        if first.removeprefix("shell.") in DIALECTS:
            return f"conda {first}: say activate, deactivate or hook"
        return f"conda {first}: unknown shell ({shells})"
    return f"conda {words} is not part of sitestack's conda front door: " + INSTEAD.get(words, WHAT_IT_DOES)


ENV = (Option("-p", "--prefix", metavar="PATH", help="the environment at PATH"),
       Option("-n", "--name", metavar="NAME", help="the environment called NAME (conda env list)"))
QUIET = (Option("-y", "--yes", action="store_true", help="taken; nothing asks"),
         Option("-q", "--quiet", action="store_true", help="taken"),
         Option("--offline", action="store_true", help="taken"))
PACKAGES = Option("packages", nargs="*", metavar="PKG", help="conda specs: numpy, numpy=1.26, numpy>=1.26")
JSON = Option("--json", action="store_true")
# One Sub each, here and after shell.X (what the `conda` function runs): messages say `conda activate`.
ACTIVATE = Sub("activate", "make an environment active", options=(
    Option("env", nargs="?", metavar="ENV", help="base, a clone's or layer's PATH, or a NAME (default: base)"),
    Option("--stack", action="store_true", help="on top of the active environment"),
    Option("--no-stack", action="store_true", help="in place of the active environment (the default)"),
))
DEACTIVATE = Sub("deactivate", "undo the last activate")
COMMAND = Command(
    "the conda front door (the site's `conda` command runs this)", program="conda", bare=True, unknown=_elsewhere,
    options=(Option("-h", "--help", action="store_true", help="what the front door does (conda help too)"),
             Option("-V", "--version", action="store_true", help="which front door this is")),
    subcommands=(
        ACTIVATE,
        DEACTIVATE,
        Sub("create", "a writable copy of the stack (sitestack clone)", options=(
            Option("--clone", metavar="ENV", help="base (the loaded stack)"), *ENV, *QUIET,
            Option("--force", action="store_true", help="replace an earlier clone at the same path"),
            Option("packages", nargs="*", metavar="PKG", help="refused: this front door makes clones only"),
        )),
        Sub("install", "into the active clone or layer", options=(
            *ENV, *QUIET, Option("-c", "--channel", action="append", default=[], dest="channels", metavar="CHANNEL",
                                 help="refused: the site chose where packages come from"),
            Option("--override-channels", action="store_true", help="taken"), PACKAGES,
        )),
        Sub("remove", "from the active clone or layer", aliases=("uninstall",), options=(*ENV, *QUIET, PACKAGES)),
        Sub("list", "the packages of the active environment", options=(
            *ENV, JSON, Option("regex", nargs="?", metavar="REGEX", help="taken; every package is listed"),
        )),
        Sub("info", "what is loaded and active, where packages come from", options=(
            Option("-e", "--envs", action="store_true", help="the environments (conda env list)"), JSON,
        )),
        Sub("env", "conda env list", subcommands=(
            Sub("env list", "base and your clones and layers", options=(JSON,)),
        )),
        Sub("run", "run a command in an environment", options=(
            *ENV, Option("--no-capture-output", "--live-stream", dest="live", action="store_true", help="taken"),
            Option("cmd", nargs=REST, metavar="CMD", help="the command and its arguments"),
        )),
        Sub("help", "what the front door does", options=(Option("topic", nargs=REST, metavar="...", help="taken"),)),
        *(Sub(f"shell.{d}", f"what the `conda` function evals, for {d}", subcommands=(
            ACTIVATE, DEACTIVATE,
            Sub(f"shell.{d} hook", f"the `conda` function, for eval \"$(conda shell.{d} hook)\""),
            Sub(f"shell.{d} reactivate", "hash -r"),
        )) for d in DIALECTS),
    ))


USAGE = """\
usage: conda COMMAND ...

This is sitestack's conda front door for {stack}, not conda: the stack is a sitestack
stack, and these commands map onto sitestack (docs/conda.md).

  conda activate [base|PATH|NAME]      make an environment active (also --stack)
  conda deactivate                     undo the last activate
  conda create --clone base (-p PATH | -n NAME) [--force]
                                       a writable copy of the stack (sitestack clone)
  conda install [-y] PKG...            into the active clone or layer (-p/-n: another)
  conda remove PKG...                  from the active clone or layer
  conda list                           the packages of the active environment
  conda env list | conda info --envs   base and your clones and layers
  conda info                           what is loaded and active, where packages come from
  conda run [-p PATH | -n NAME] CMD... run a command in an environment
  conda shell.bash hook                the `conda` shell function (eval it in scripts)
  conda --version
"""


def run(args: argparse.Namespace) -> int:
    import os

    env = dict(os.environ)
    if args.version and not args.help:
        return _version(env)
    if args.help or args.subcommand in (None, "help"):
        from sitestack.user.condafront.envs import loaded_stack

        rec = loaded_stack(env)
        sys.stdout.write(USAGE.format(stack=rec.ref if rec else "no loaded stack"))
        return 0
    sub, dialect = args.subcommand, None
    if sub.startswith("shell."):
        shell, sub = sub.split(" ", 1)
        dialect = shell.removeprefix("shell.")
    if sub == "hook":
        from sitestack.user.condafront.activate import hook

        sys.stdout.write(hook(str(dialect), _exe(env)))
        return 0
    if sub in ("activate", "deactivate", "reactivate"):
        return _activate(sub, args, dialect, env)
    if sub == "create":
        return _create(args, env)
    if sub in ("install", "remove"):
        return _install(sub, args, env)
    if sub == "list":
        return _list(args, env)
    if sub == "env list" or (sub == "info" and args.envs):
        return _envs(args, env)
    if sub == "info":
        return _info(args, env)
    return _runcmd(args, env)


def _exe(env: Mapping[str, str]) -> str:
    """The site's `conda` command for the hook's function: this very one when it runs from the
    site's tool folder, else the current tool of the loaded stack's site root."""
    import os
    from pathlib import Path

    from sitestack.core.layout import SiteRoot
    from sitestack.errors import UsageError
    from sitestack.site.sitetool import tool_bin
    from sitestack.user.condafront.envs import loaded_stack

    here = os.path.normpath(os.path.join(sys.prefix, os.pardir, "bin", "conda"))
    if os.path.isfile(here) and os.path.isfile(os.path.join(sys.prefix, os.pardir, "tool.json")):
        return here
    rec = loaded_stack(env)
    site_bin = tool_bin(SiteRoot(Path(rec.root))) if rec is not None else ""
    if not site_bin:
        raise UsageError("no site `conda` command to hook: load a stack of a site built by this sitestack")
    return os.path.join(site_bin, "conda")


def _version(env: Mapping[str, str]) -> int:
    from sitestack import __version__
    from sitestack.user.condafront.envs import loaded_stack

    rec = loaded_stack(env)
    print(f"sitestack {__version__}: the conda front door for {rec.ref if rec else 'no loaded stack'} "
          "(this is not conda; conda --help says what it does)")
    return 0


def _activate(sub: str, args: argparse.Namespace, dialect: str | None, env: Mapping[str, str]) -> int:
    from sitestack.errors import UsageError
    from sitestack.user.condafront.activate import activate, deactivate

    if dialect is None:
        raise UsageError(f"conda {sub} changes your shell, which only the conda shell function can: "
                         "this shell does not have it",
                         hint='run eval "$(conda shell.bash hook)" first (shell.zsh in zsh), as with conda')
    if sub == "reactivate":
        sys.stdout.write("hash -r 2>/dev/null || true\n")
    elif sub == "deactivate":
        sys.stdout.write(deactivate(env, dialect).code)
    else:
        sys.stdout.write(activate(env, args.env, dialect, stack=args.stack).code)
    return 0


def _create(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from sitestack.core.templates import sh_quote
    from sitestack.errors import UsageError
    from sitestack.output import human_bytes
    from sitestack.user.condafront.create import create_clone

    if args.clone is None or args.packages:
        raise UsageError("this front door makes clones of the stack only: conda create --clone base "
                         "(-p PATH | -n NAME)",
                         hint="for a new environment on the stack: python -m venv --system-site-packages DIR "
                              "(or sitestack venv DIR), then conda activate DIR")
    made = create_clone(env, args.clone, prefix=args.prefix, name=args.name, force=args.force)
    r = made.result
    for why in r.fallback:
        print(f"note: {why}", file=sys.stderr)
    print(f"cloned {r.source} to {r.prefix}: mode {r.mode}, {r.files} files, "
          f"{human_bytes(r.bytes)}, {r.seconds:.2f} s")
    print(f"#\n# To activate this environment, use\n#\n#     $ conda activate {sh_quote(made.activate_as)}\n#\n"
          "# To deactivate an active environment, use\n#\n#     $ conda deactivate\n")
    return 0


def _install(sub: str, args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from sitestack.user.condafront.install import change

    res = change(env, args.packages, remove=sub == "remove", channels=getattr(args, "channels", []),  # remove has no -c
                 prefix=args.prefix, name=args.name, command=f"conda {sub}")
    print(f"note: {res.source}")
    if res.layer is not None:
        from_stack = ", ".join(f"{i.name} {i.version}" for i in res.layer.from_stack)
        if from_stack:
            print(f"  from the stack:  {from_stack}")
    verb = "installed into" if sub == "install" else "removed from"
    if not res.added and not res.removed:
        print(f"nothing to change in {res.target}")
    else:
        print(f"{verb} {res.target}:")
    for label, items in (("added", res.added), ("removed", res.removed)):
        if items:
            print(f"  {label + ':':<9}{', '.join(items)}")
    return 0


def _list(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from sitestack.user.condafront.info import listing

    res = listing(env, args.prefix, args.name)
    if args.json:
        from sitestack.output import emit_json

        emit_json([{"name": p.name, "version": p.version, "build_string": p.build, "channel": p.channel}
                   for p in res.packages])
        return 0
    print(f"# packages in environment at {res.prefix}:\n#")
    print(f"# {'Name':<24}{'Version':<26}{'Build':<8}Channel")
    for p in res.packages:
        print(f"{p.name:<26}{p.version:<26}{p.build:<8}{p.channel}")
    return 0


def _envs(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from sitestack.user.condafront.info import environments

    rows = environments(env)
    if args.json:
        from sitestack.output import emit_json

        emit_json({"envs": [str(r.prefix) for r in rows]})
        return 0
    print("# conda environments:\n#")
    width = max([len(r.name) for r in rows] + [12]) + 2
    for r in rows:
        print(f"{r.name:<{width}}{'*' if r.active else ' '}  {r.prefix}")
    return 0


def _info(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from sitestack import __version__
    from sitestack.user.condafront.info import info

    i = info(env)
    rows = {
        "active environment": i.active or "None",
        "active env location": i.active_prefix or "-",
        "shell level": i.shlvl,
        "base environment": f"{i.stack} at {i.stack_prefix} (read-only)" if i.stack else "no stack loaded",
        "python version": i.python or "-",
        "package source": i.sources,
        "envs directories": ", ".join(i.envs_dirs),
        "user base": i.user_base or "-",
        "conda version": f"none: sitestack {__version__}'s conda front door",
    }
    if args.json:
        from sitestack.output import emit_json

        emit_json({k.replace(" ", "_"): v for k, v in rows.items()})
        return 0
    for k, v in rows.items():
        print(f"{k:>22} : {v}")
    return 0


def _runcmd(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import os
    import shutil

    from sitestack.errors import UsageError
    from sitestack.user.condafront.activate import run_env

    words = args.cmd
    if not words:
        raise UsageError("conda run: name the command to run")
    new = run_env(env, args.prefix, args.name)
    exe = shutil.which(words[0], path=new.get("PATH"))
    if exe is None:
        raise UsageError(f"conda run: {words[0]}: command not found in the environment")
    sys.stdout.flush()
    os.execve(exe, words, new)
    return 0  # not reached
