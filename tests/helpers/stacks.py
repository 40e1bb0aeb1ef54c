"""Stacks for tests: the tiny wheelhouse, spec text, and a builder that builds each once.

Imports of the build machinery are lazy so that tests/unit/ never pays for them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers.wheels import make_wheel

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot
    from sitestack.core.records import StackRecord

# The X.Y of every stack spec_text makes (it is built from this interpreter). Prefer the
# record's own `python_xy` where a test has one.
PY_XY = f"{sys.version_info.major}.{sys.version_info.minor}"

# The tiny wheels every test may install, offline.
WHEELS: list[dict[str, object]] = [
    {"name": "shadowme", "version": "1.0"},
    {"name": "shadowme", "version": "2.0"},
    {"name": "needsnew", "version": "1.0", "requires": ["shadowme>=2"]},
    {"name": "tinyapp", "version": "1.0", "console_scripts": {"tinyapp": "tinyapp:main"}},
    {"name": "userpkg", "version": "1.0", "console_scripts": {"userpkg-hello": "userpkg:main"}},
    {"name": "layerpkg", "version": "1.0", "requires": ["shadowme"]},
    {"name": "basepkg", "version": "1.0"},
    {"name": "basepkg", "version": "2.0"},
    {"name": "onlyold", "version": "1.0", "requires": ["basepkg<2"]},
]


def _main_module(name: str, version: str) -> dict[str, str]:
    return {
        f"{name}/__init__.py": (
            f'__version__ = "{version}"\n\n'
            f"def main():\n    print(\"{name} {version}\")\n"
        )
    }


def make_test_wheelhouse(dest: Path) -> Path:
    """WHEELS built into `dest` (which must not exist)."""
    dest.mkdir()
    for w in WHEELS:
        name, version = str(w["name"]), str(w["version"])
        make_wheel(
            dest, name, version,
            requires=tuple(w.get("requires", ())),  # type: ignore[arg-type]
            files=_main_module(name, version),
            console_scripts=w.get("console_scripts"),  # type: ignore[arg-type]
        )
    return dest


def spec_text(name: str, requirements: list[str], wheelhouse: Path, *, site: str = "testsite",
              imports: list[str] | None = None, commands: list[str] | None = None,
              extra: str = "") -> str:
    reqs = ", ".join(f'"{r}"' for r in requirements)
    imp = ", ".join(f'"{i}"' for i in (imports or []))
    cmds = ", ".join(repr(c).replace("'", '"') if '"' not in c else f"'{c}'" for c in (commands or []))
    return (
        f'[stack]\nname = "{name}"\npython = "{sys.executable}"\nsite = "{site}"\n'
        f'description = "test stack"\n\n'
        f'[packages]\nrequirements = [{reqs}]\nfind-links = ["{wheelhouse}"]\nno-index = true\n\n'
        f"[tests]\nimports = [{imp}]\ncommands = [{cmds}]\n{extra}"
    )


BuildStack = Callable[..., "StackRecord"]


def make_builder(root: SiteRoot, wheelhouse: Path) -> BuildStack:
    cache: dict[tuple[str, str], StackRecord] = {}

    def build_stack(name: str, version: str, requirements: list[str], *, default: bool = False,
                    **kw: object) -> StackRecord:
        from sitestack.build.stack import BuildLog, build
        from sitestack.site.registry import Site
        from sitestack.site.spec import parse_spec

        key = (name, version)
        if key not in cache:
            spec = parse_spec(spec_text(name, requirements, wheelhouse, **kw))  # type: ignore[arg-type]
            build(spec, root, version=version, make_default=default, log=BuildLog(echo=False))
            cache[key] = Site(root).get(f"{name}/{version}")
        return cache[key]

    return build_stack


def stale_bytecode(site_packages: Path) -> tuple[int, list[str]]:
    """(.pyc files checked, the sources whose .pyc CPython would not take): the magic, the
    timestamp mode, the .py's mtime and size in the header. A read-only stack never
    rewrites a stale one, so every import would compile the module again."""
    import importlib.util
    import struct

    n, stale = 0, []
    for py in site_packages.rglob("*.py"):
        pyc = Path(importlib.util.cache_from_source(str(py)))
        if "__pycache__" in py.parts or not pyc.exists():
            continue
        n += 1
        magic, flags, mtime, size = struct.unpack("<4sIII", pyc.read_bytes()[:16])
        st = py.stat()
        if (magic, flags, mtime, size) != (importlib.util.MAGIC_NUMBER, 0, int(st.st_mtime) & 0xFFFFFFFF,
                                           st.st_size & 0xFFFFFFFF):
            stale.append(str(py.relative_to(site_packages)))
    return n, stale
