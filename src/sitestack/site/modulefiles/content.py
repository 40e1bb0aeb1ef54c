"""What a modulefile says, in no language: one ``ModuleContent`` per stack version.

The Lmod and Tcl writers both render this, so the two formats cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

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
