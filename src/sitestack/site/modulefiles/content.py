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

    @property
    def whatis(self) -> list[str]:
        pkgs = ", ".join(f"{n} {v}" for n, v in self.packages[:MAIN_PACKAGES])
        more = f" and {len(self.packages) - MAIN_PACKAGES} more" if len(self.packages) > MAIN_PACKAGES else ""
        lines = [f"Name: {self.name}", f"Version: {self.version}", f"Python: {self.python}"]
        if self.description:
            lines.append(f"Description: {self.description}")
        lines.append(f"Packages: {pkgs}{more}" if pkgs else "Packages: none")
        return lines

    @property
    def extensions(self) -> list[str]:
        """Every distribution as ``name/version``: what Lmod's ``module spider NAME`` finds."""
        return [f"{n}/{v}" for n, v in self.packages]

    @property
    def help_text(self) -> str:
        parts = [f"{self.name}/{self.version}: Python {self.python} stack"]
        if self.description:
            parts.append(self.description)
        if self.help:
            parts.append(self.help)
        parts.append("Main packages: " + (", ".join(f"{n} {v}" for n, v in self.packages[:MAIN_PACKAGES]) or "none"))
        parts.append(
            "Extend it: `sitestack venv DIR` (layer), `sitestack clone` (writable copy), "
            "or `pip install --user` (goes to $PYTHONUSERBASE, this version only)."
        )
        return "\n".join(parts)
