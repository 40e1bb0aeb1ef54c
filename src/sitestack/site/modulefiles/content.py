"""What a modulefile says, in no language: one ``ModuleContent`` per stack version.

The Lmod and Tcl writers both render this, so the two formats cannot drift apart;
``ModuleContent.env_plan`` is the same changes as a list of operations, for every front door
that sets variables itself (`sitestack load`, and whatever else starts a stack's python).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sitestack.errors import UsageError

Op = tuple[str, str, str]  # ("prepend" | "set", VAR, value)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def path_join(*parts: str) -> str:
    """Lmod's pathJoin: '/'-joined, repeated slashes collapsed."""
    return re.sub(r"/+", "/", "/".join(p for p in parts if p))


def apply_plan(env: Mapping[str, str], ops: list[Op]) -> dict[str, str]:
    """`env` after `ops`: a prepended entry already there moves to the front, as in Lmod."""
    out = dict(env)
    for kind, var, value in ops:
        if kind == "set":
            out[var] = value
        else:
            rest = [p for p in out.get(var, "").split(":") if p and p != value]
            out[var] = ":".join([value, *rest])
    return out


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
        ops += [("set", k, v) for k, v in self.setenv]
        ops += [("prepend", k, v) for k, v in self.prepend_path]
        for _, var, _ in ops:
            if not _NAME.fullmatch(var):
                raise UsageError(f"{ref}: {var!r} is not a variable name a shell can set")
        return ops
