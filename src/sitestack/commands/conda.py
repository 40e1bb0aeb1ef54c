"""conda: the seed page's `conda` commands on any stack (the site's `conda` runs `sitestack conda`).

conda's own command line is parsed here, in one table (GRAMMAR), without argparse: `conda
create --clone` is benchmarked against `sitestack clone`, whose start-up skips argparse too.
Each subcommand calls one library function (user/condafront/) and renders its result; every
error is one `conda: error:` line (and at most one hint), never a traceback.
"""

from __future__ import annotations

import sys

from sitestack import TYPE_CHECKING
from sitestack.options import Command

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from typing import Any

# conda's command line is not argparse's (`conda --version`, `conda -h`, `conda run CMD -x`):
# every word after `conda` comes here as it is, and GRAMMAR below reads it.
COMMAND = Command("the conda front door (the site's `conda` command runs this)",
                  words="a conda command line: activate, deactivate, create --clone, install, remove, "
                        "list, env list, info, run, shell.bash hook, --version (conda --help)")

# subcommand -> (flags, options taking a value, options that may repeat); every spelling of
# each, mapped to one name. Positionals are the rest (`run`: everything after its options).
ENV_OPTS = {"-p": "prefix", "--prefix": "prefix", "-n": "name", "--name": "name"}
QUIET = {"-y": "yes", "--yes": "yes", "-q": "quiet", "--quiet": "quiet", "--offline": "offline"}
GRAMMAR: dict[str, tuple[dict[str, str], dict[str, str], set[str]]] = {
    "activate": ({"--stack": "stack", "--no-stack": "no_stack"}, {}, set()),
    "deactivate": ({}, {}, set()),
    "create": ({**QUIET, "--force": "force"}, {**ENV_OPTS, "--clone": "clone"}, set()),
    "install": ({**QUIET, "--override-channels": "override"},
                {**ENV_OPTS, "-c": "channel", "--channel": "channel"}, {"channel"}),
    "remove": ({**QUIET}, {**ENV_OPTS}, set()),
    "list": ({"--json": "json"}, {**ENV_OPTS}, set()),
    "info": ({"--envs": "envs", "-e": "envs", "--json": "json"}, {}, set()),
    "env list": ({"--json": "json"}, {}, set()),
    "run": ({"--no-capture-output": "live", "--live-stream": "live"}, {**ENV_OPTS}, set()),
}
ALIASES = {"uninstall": "remove", "env": "env"}
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


class Request:
    """One parsed conda command line."""

    __slots__ = ("cmd", "opts", "words")

    def __init__(self, cmd: str, opts: dict[str, Any], words: list[str]) -> None:
        self.cmd, self.opts, self.words = cmd, opts, words


def parse(argv: list[str]) -> Request:
    from sitestack.errors import UsageError

    if not argv or argv[0] in ("-h", "--help", "help"):
        return Request("help", {}, [])
    if argv[0] in ("-V", "--version"):
        return Request("version", {}, [])
    cmd, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if cmd.startswith("shell."):
        if not rest or rest[0] not in ("activate", "deactivate", "hook", "reactivate"):
            raise UsageError(f"conda {cmd}: say activate, deactivate or hook")
        inner = parse(rest) if rest[0] in ("activate", "deactivate") else Request(rest[0], {}, [])
        inner.opts["dialect"] = cmd.removeprefix("shell.")
        return inner
    if cmd == "env":
        sub = rest[0] if rest else ""
        cmd, rest = f"env {sub}".strip(), rest[1:]
    if cmd in INSTEAD or cmd not in GRAMMAR:
        raise UsageError(f"conda {cmd} is not part of sitestack's conda front door: "
                         + INSTEAD.get(cmd, "it does activate, deactivate, create --clone, install, remove, "
                                            "list, env list, info and run (conda --help)"))
    flags, values, multi = GRAMMAR[cmd]
    opts: dict[str, Any] = {v: [] for v in multi}
    words: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if cmd == "run" and words:
            words += rest[i:]
            break
        key, eq, val = arg.partition("=")
        if arg in ("-h", "--help"):
            return Request("help", {}, [])
        if arg in flags:
            opts[flags[arg]] = True
        elif arg in values or (eq and key.startswith("--") and key in values):
            name = values[key if eq else arg]
            if not eq:
                if i + 1 == len(rest):
                    raise UsageError(f"conda {cmd}: {arg} needs a value")
                i += 1
                val = rest[i]
            if name in multi:
                opts[name].append(val)
            elif name in opts:
                raise UsageError(f"conda {cmd}: {arg} given twice")
            else:
                opts[name] = val
        elif arg.startswith("-") and arg != "-" and not (cmd == "run" and arg == "--"):
            raise UsageError(f"conda {cmd}: unknown option {arg} (conda --help)")
        elif arg == "--":
            words += rest[i + 1:]
            break
        else:
            words.append(arg)
        i += 1
    return Request(cmd, opts, words)


def run(args: argparse.Namespace) -> int:
    import os

    from sitestack.errors import SitestackError

    try:
        return _run(parse(list(args.words)), dict(os.environ))
    except SitestackError as e:
        sys.stdout.flush()
        print(f"conda: error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code


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


def _run(req: Request, env: dict[str, str]) -> int:
    from sitestack.errors import UsageError

    o, w = req.opts, req.words
    if req.cmd == "help":
        from sitestack.user.condafront.envs import loaded_stack

        rec = loaded_stack(env)
        sys.stdout.write(USAGE.format(stack=rec.ref if rec else "no loaded stack"))
        return 0
    if req.cmd == "version":
        return _version(env)
    if req.cmd == "hook":
        from sitestack.user.condafront.activate import hook

        sys.stdout.write(hook(o["dialect"], _exe(env)))
        return 0
    if req.cmd in ("activate", "deactivate", "reactivate"):
        return _activate(req, env)
    if req.cmd == "create":
        return _create(o, w, env)
    if req.cmd in ("install", "remove"):
        return _install(req, env)
    if req.cmd == "list":
        return _list(o, env)
    if req.cmd == "env list" or (req.cmd == "info" and o.get("envs")):
        return _envs(o, env)
    if req.cmd == "info":
        return _info(o, env)
    if req.cmd == "run":
        return _runcmd(o, w, env)
    raise UsageError(f"conda {req.cmd}: not understood (conda --help)")


def _version(env: Mapping[str, str]) -> int:
    from sitestack import __version__
    from sitestack.user.condafront.envs import loaded_stack

    rec = loaded_stack(env)
    print(f"sitestack {__version__}: the conda front door for {rec.ref if rec else 'no loaded stack'} "
          "(this is not conda; conda --help says what it does)")
    return 0


def _activate(req: Request, env: Mapping[str, str]) -> int:
    from sitestack.errors import UsageError
    from sitestack.user.condafront.activate import activate, deactivate

    dialect = req.opts.get("dialect")
    if dialect is None:
        raise UsageError(f"conda {req.cmd} changes your shell, which only the conda shell function can: "
                         "this shell does not have it",
                         hint='run eval "$(conda shell.bash hook)" first (shell.zsh in zsh), as with conda')
    if req.cmd == "reactivate":
        sys.stdout.write("hash -r 2>/dev/null || true\n")
        return 0
    if req.cmd == "deactivate":
        if req.words:
            raise UsageError("conda deactivate takes no environment")
        sys.stdout.write(deactivate(env, dialect).code)
        return 0
    if len(req.words) > 1:
        raise UsageError(f"conda activate takes one environment, not {len(req.words)}")
    sys.stdout.write(activate(env, req.words[0] if req.words else None, dialect,
                              stack=bool(req.opts.get("stack"))).code)
    return 0


def _create(o: dict[str, Any], words: list[str], env: Mapping[str, str]) -> int:
    from sitestack.core.templates import sh_quote
    from sitestack.errors import UsageError
    from sitestack.output import human_bytes
    from sitestack.user.condafront.create import create_clone

    if o.get("clone") is None or words:
        raise UsageError("this front door makes clones of the stack only: conda create --clone base "
                         "(-p PATH | -n NAME)",
                         hint="for a new environment on the stack: python -m venv --system-site-packages DIR "
                              "(or sitestack venv DIR), then conda activate DIR")
    made = create_clone(env, o["clone"], prefix=o.get("prefix"), name=o.get("name"), force=bool(o.get("force")))
    r = made.result
    for why in r.fallback:
        print(f"note: {why}", file=sys.stderr)
    print(f"cloned {r.source} to {r.prefix}: mode {r.mode}, {r.files} files, "
          f"{human_bytes(r.bytes)}, {r.seconds:.2f} s")
    print(f"#\n# To activate this environment, use\n#\n#     $ conda activate {sh_quote(made.activate_as)}\n#\n"
          "# To deactivate an active environment, use\n#\n#     $ conda deactivate\n")
    return 0


def _install(req: Request, env: Mapping[str, str]) -> int:
    from sitestack.user.condafront.install import change

    o = req.opts
    res = change(env, req.words, remove=req.cmd == "remove", channels=o.get("channel", []),
                 prefix=o.get("prefix"), name=o.get("name"), command=f"conda {req.cmd}")
    print(f"note: {res.source}")
    if res.layer is not None:
        from_stack = ", ".join(f"{i.name} {i.version}" for i in res.layer.from_stack)
        if from_stack:
            print(f"  from the stack:  {from_stack}")
    verb = "installed into" if req.cmd == "install" else "removed from"
    if not res.added and not res.removed:
        print(f"nothing to change in {res.target}")
    else:
        print(f"{verb} {res.target}:")
    for label, items in (("added", res.added), ("removed", res.removed)):
        if items:
            print(f"  {label + ':':<9}{', '.join(items)}")
    return 0


def _list(o: dict[str, Any], env: Mapping[str, str]) -> int:
    from sitestack.user.condafront.info import listing

    res = listing(env, o.get("prefix"), o.get("name"))
    if o.get("json"):
        from sitestack.output import emit_json

        emit_json([{"name": p.name, "version": p.version, "build_string": p.build, "channel": p.channel}
                   for p in res.packages])
        return 0
    print(f"# packages in environment at {res.prefix}:\n#")
    print(f"# {'Name':<24}{'Version':<26}{'Build':<8}Channel")
    for p in res.packages:
        print(f"{p.name:<26}{p.version:<26}{p.build:<8}{p.channel}")
    return 0


def _envs(o: dict[str, Any], env: Mapping[str, str]) -> int:
    from sitestack.user.condafront.info import environments

    rows = environments(env)
    if o.get("json"):
        from sitestack.output import emit_json

        emit_json({"envs": [str(r.prefix) for r in rows]})
        return 0
    print("# conda environments:\n#")
    width = max([len(r.name) for r in rows] + [12]) + 2
    for r in rows:
        print(f"{r.name:<{width}}{'*' if r.active else ' '}  {r.prefix}")
    return 0


def _info(o: dict[str, Any], env: Mapping[str, str]) -> int:
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
    if o.get("json"):
        from sitestack.output import emit_json

        emit_json({k.replace(" ", "_"): v for k, v in rows.items()})
        return 0
    for k, v in rows.items():
        print(f"{k:>22} : {v}")
    return 0


def _runcmd(o: dict[str, Any], words: list[str], env: Mapping[str, str]) -> int:
    import os
    import shutil

    from sitestack.errors import UsageError
    from sitestack.user.condafront.activate import run_env

    if not words:
        raise UsageError("conda run: name the command to run")
    new = run_env(env, o.get("prefix"), o.get("name"))
    exe = shutil.which(words[0], path=new.get("PATH"))
    if exe is None:
        raise UsageError(f"conda run: {words[0]}: command not found in the environment")
    sys.stdout.flush()
    os.execve(exe, words, new)
    return 0  # not reached
