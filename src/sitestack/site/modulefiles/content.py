"""What a modulefile says, in no language: one ``ModuleContent`` per stack version.

The Lmod and Tcl writers both render this, so the two formats cannot drift apart;
``ModuleContent.env_plan`` is the same changes as a list of operations, for every front door
that sets variables itself (`sitestack load`, the conda front door's `activate`, and whatever
else starts a stack's python). ``layer_plan`` is what activating a venv changes, in the same
terms. The conda front door's part of a modulefile (its shell function, the variables it
keeps, what unload takes back from it) is modelled here too: ``front_door_unload``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sitestack.errors import UsageError

# ("prepend" | "set", VAR, value), or ("keep", VAR, ""): unchanged by load, and put back on
# unload to its value at load, whatever changed it meanwhile (the conda front door does).
Op = tuple[str, str, str]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# What the conda front door changes after load, kept by the modulefile (see "keep" above).
FRONT_DOOR_VARS = ("CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL", "CONDA_PROMPT_MODIFIER",
                   "VIRTUAL_ENV", "SITESTACK_CLONE")
# Its state (user/condafront/state.py), and what it leaves for unload to take back: the PATH
# entries it added (':'-separated) and the variables it created (space-separated). Unload
# reads both from the environment, so it drops only absolute entries and unsets only names
# of this shape (the templates front-door.lua/.tcl say the same in their languages).
FRONT_DOOR_STATE = "_SITESTACK_CONDA"
FRONT_DOOR_PATHS = "_SITESTACK_CONDA_PATHS"
FRONT_DOOR_UNSET = "_SITESTACK_CONDA_UNSET"
UNSETTABLE = re.compile(r"CONDA_[A-Z0-9_]+|VIRTUAL_ENV|SITESTACK_CLONE")


def path_join(*parts: str) -> str:
    """Lmod's pathJoin: '/'-joined, repeated slashes collapsed."""
    return re.sub(r"/+", "/", "/".join(p for p in parts if p))


def apply_plan(env: Mapping[str, str], ops: list[Op]) -> dict[str, str]:
    """`env` after `ops`: a prepended entry already there moves to the front, as in Lmod."""
    out = dict(env)
    for kind, var, value in ops:
        if kind == "set":
            out[var] = value
        elif kind == "prepend":
            rest = [p for p in out.get(var, "").split(":") if p and p != value]
            out[var] = ":".join([value, *rest])
        elif kind != "keep":
            raise ValueError(f"unknown plan operation {kind!r}")
    return out


def layer_plan(path: str) -> list[Op]:
    """What activating a venv (a layer) changes, as its own bin/activate does it."""
    return [("set", "VIRTUAL_ENV", path), ("prepend", "PATH", path_join(path, "bin"))]


def front_door_unload(env: Mapping[str, str]) -> dict[str, str]:
    """`env` after a modulefile's unload has taken back what the conda front door left: the
    PATH entries it lists, the variables it created, its own state."""
    out = dict(env)
    drop = {p for p in env.get(FRONT_DOOR_PATHS, "").split(":") if p.startswith("/")}
    if drop and "PATH" in out:
        out["PATH"] = ":".join(p for p in out["PATH"].split(":") if p not in drop)
    for name in env.get(FRONT_DOOR_UNSET, "").split():
        if UNSETTABLE.fullmatch(name):
            out.pop(name, None)
    for var in (FRONT_DOOR_STATE, FRONT_DOOR_PATHS, FRONT_DOOR_UNSET):
        out.pop(var, None)
    return out


def front_door_function(conda_exe: str) -> str:
    """The body of the `conda` shell function: activate/deactivate eval what the front door's
    executable prints (as conda's own shell wrapper does), the rest runs it directly."""
    from sitestack.core.templates import render_file

    return render_file("sitestack.site.modulefiles", "conda-front.sh", {"CONDA": conda_exe})


def define_function(name: str, body: str) -> str:
    """Shell code (bash, zsh, sh) that defines function `name` as a modulefile's
    set_shell_function does: for `sitestack load` and `conda shell.bash hook`."""
    return f"{name}() {{\n{body}}}\n"


@dataclass(frozen=True)
class CondaShell:
    """Real conda's shell integration, translated at build time from PREFIX/etc/profile.d/conda.sh
    (conda/shellhook.py): what its `export` lines set, its functions, the PATH entry it adds."""

    env: tuple[tuple[str, str], ...]
    functions: tuple[tuple[str, str], ...]
    path: tuple[str, ...]

    @classmethod
    def from_json(cls, data: object) -> CondaShell | None:
        """From stack.json's "conda_shell"; None unless it has exactly that shape."""
        def pairs(v: object) -> tuple[tuple[str, str], ...] | None:
            if not isinstance(v, list) or not all(
                    isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in v):
                return None
            return tuple((str(a), str(b)) for a, b in v)

        if not isinstance(data, dict):
            return None
        env, functions, path = pairs(data.get("env")), pairs(data.get("functions")), data.get("path")
        if env is None or not functions or not isinstance(path, list) or \
                not all(isinstance(p, str) and p.startswith("/") for p in path):
            return None
        if not all(_NAME.fullmatch(k) for k, _ in env + functions):
            return None
        return cls(env, functions, tuple(path))


HEADER = "Written by sitestack; do not edit. Run `sitestack modulefiles` to rewrite."
MAIN_PACKAGES = 12


@dataclass(frozen=True)
class ModuleContent:
    name: str
    version: str
    prefix: str
    root: str
    site: str
    python: str
    description: str
    help: str
    packages: tuple[tuple[str, str], ...]
    family: str
    depends_on: tuple[str, ...]
    setenv: tuple[tuple[str, str], ...]
    prepend_path: tuple[tuple[str, str], ...]  # (VAR, path) in the order to prepend
    deprecated: str | None
    conda: bool = False
    # The spec's own requirements by name, in its order: named first in help and whatis.
    requested: tuple[str, ...] = ()
    # PYTHONUSERBASE relative to $HOME ('/'-separated); "" is the stack's own (records.user_base_rel).
    user_base: str = ""
    # A clone's personal modulefile (`sitestack clone --module`): prefix is the clone's; it sets
    # SITESTACK_CLONE instead of the stack's SITESTACK_* variables, of conda's only CONDA_PREFIX.
    clone: bool = False
    # The bin folder of the site's own sitestack (`sitestack` and the `conda` front door), put
    # on PATH after the stack's; "" where the site root has none (site/sitetool.py).
    tool: str = ""
    # Real conda, where the stack carries it: its shell function instead of the front door's.
    conda_shell: CondaShell | None = None

    @property
    def functions(self) -> tuple[tuple[str, str], ...]:
        """The shell functions loading defines: real conda's, else the front door's `conda`."""
        if self.clone:
            return ()
        if self.conda_shell is not None:
            return self.conda_shell.functions
        return (("conda", front_door_function(path_join(self.tool, "conda"))),) if self.tool else ()

    @property
    def front_door(self) -> bool:
        """Whether sitestack's own conda front door comes with this module."""
        return bool(self.tool) and not self.clone and self.conda_shell is None

    @property
    def user_base_parts(self) -> tuple[str, ...]:
        from sitestack.core.records import user_base_rel

        return tuple((self.user_base or user_base_rel(self.site, self.name, self.version)).split("/"))

    @property
    def clone_summary(self) -> str:
        return f"Clone of {self.name}/{self.version} (Python {self.python}) at {self.prefix}"

    @property
    def main_packages(self) -> str:
        """`torch 2.5.1, jax 0.4.35 and 77 more`: what the site asked for, with versions,
        then how many came with them. Without a request list (older records): the first
        MAIN_PACKAGES by name."""
        versions = dict(self.packages)
        main = [(n, versions[n]) for n in self.requested if n in versions]
        if not main:
            main = list(self.packages[:MAIN_PACKAGES])
        rest = len(self.packages) - len(main)
        text = ", ".join(f"{n} {v}" for n, v in main)
        return f"{text} and {rest} more" if rest > 0 and text else text

    @property
    def whatis(self) -> list[str]:
        if self.clone:
            return [self.clone_summary]
        pkgs = self.main_packages
        lines = [f"Name: {self.name}", f"Version: {self.version}", f"Python: {self.python}"]
        if self.description:
            lines.append(f"Description: {self.description}")
        lines.append(f"Packages: {pkgs}" if pkgs else "Packages: none")
        return lines

    @property
    def extensions(self) -> list[str]:
        """Every distribution as ``name/version``: what Lmod's ``module spider NAME`` finds."""
        return [f"{n}/{v}" for n, v in self.packages]

    @property
    def help_text(self) -> str:
        if self.clone:
            return self.clone_summary
        parts = [f"{self.name}/{self.version}: Python {self.python} stack"]
        if self.description:
            parts.append(self.description)
        if self.help:
            parts.append(self.help)
        parts.append("Main packages: " + (self.main_packages or "none"))
        parts.append(
            "Extend it: `sitestack venv DIR` (layer), `sitestack clone` (writable copy), "
            "or `pip install --user` (goes to $PYTHONUSERBASE, this version only)."
        )
        return "\n".join(parts)

    @property
    def jupyter_path(self) -> str:
        """ROOT/share/jupyter: where the site's kernelspecs live (JUPYTER_PATH)."""
        return path_join(self.root, "share", "jupyter")

    def env_plan(self, home: str) -> list[Op]:
        """Every change the modulefile makes, in its order, with HOME as given (the modulefile
        reads it at load time)."""
        userbase = path_join(home, *self.user_base_parts)  # records.user_base_rel, as the modulefiles
        ops: list[Op] = []
        if self.family:
            ops += [("set", f"LMOD_FAMILY_{self.family.upper()}", self.name),
                    ("set", f"LMOD_FAMILY_{self.family.upper()}_VERSION", self.version)]
        ref = f"{self.name}/{self.version}"
        if self.tool and not self.clone:
            ops.append(("prepend", "PATH", self.tool))
        ops += [
            ("prepend", "PATH", path_join(self.prefix, "bin")),
            ("set", "PYTHONUSERBASE", userbase),
            ("prepend", "PATH", path_join(userbase, "bin")),
        ]
        if self.clone:  # clone-env and conda-clone: the clone is not the site's stack
            ops += [("set", "SITESTACK_CLONE", self.prefix)]
            ops += [("set", "CONDA_PREFIX", self.prefix)] if self.conda else []
        else:
            ops += [
                ("set", "SITESTACK_STACK", ref),
                ("set", "SITESTACK_PREFIX", self.prefix),
                ("set", "SITESTACK_STACK_ROOT", self.root),
                # The site's kernels (site/kernels.py): Jupyter searches JUPYTER_PATH first.
                ("prepend", "JUPYTER_PATH", self.jupyter_path),
            ]
        if self.conda and not self.clone:
            ops += [("set", "CONDA_PREFIX", self.prefix), ("set", "CONDA_DEFAULT_ENV", ref),
                    ("set", "CONDA_SHLVL", "1"), ("set", "CONDA_PROMPT_MODIFIER", "")]
        if self.conda_shell is not None and not self.clone:
            ops += [("set", k, v) for k, v in self.conda_shell.env]
            ops += [("prepend", "PATH", p) for p in self.conda_shell.path]
        ops += [("set", k, v) for k, v in self.setenv]
        ops += [("prepend", k, v) for k, v in self.prepend_path]
        if self.functions:
            ops += [("keep", v, "") for v in self.kept]
        for _, var, _ in ops:
            if not _NAME.fullmatch(var):
                raise UsageError(f"{ref}: {var!r} is not a variable name a shell can set")
        return ops

    @property
    def kept(self) -> tuple[str, ...]:
        """The conda variables a module with a `conda` function keeps (restores on unload)
        that it does not set itself."""
        own = {"CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL", "CONDA_PROMPT_MODIFIER"} if self.conda else set()
        return tuple(v for v in FRONT_DOOR_VARS if v not in own)
