"""One site root for the "find what is installed" tests (spider, catalog, load), built once.

Its path has a space, so every consumer (modulefiles,
catalog, shell code) must quote it. It holds

  conda/2023-01-01   numpy 2.3.5, onlyold (-> basepkg 1.0)       hidden
  conda/2024-01-01   numpy 2.3.5, shadowme 1.0, tinyapp          deprecated; HTML description
  conda/2025-01-01   numpy 2.4.6, shadowme 2.0, tinyapp          default; setenv, prepend_path
  tools/1.0          tinyapp                                     (no numpy)

The numpy here is a tiny wheel of that name (hermetic, no PyPI).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers.wheels import make_wheel

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot

ROOT_NAME = "find site"  # quotes and $ in a root are refused up front (core.layout.check_root_path)
EVIL = """<script>window.pwned=1</script><img src=x onerror="window.pwned=2"> "double" & 'single' </td>"""
DEPRECATION = "use conda/2025-01-01 <b>now</b>"
SETENV = {"FIND_GREETING": "it's a \"$HOME\" `id` value", "FIND_EMPTY": ""}
PREPEND = {"FIND_PATH": ["/opt/with space/lib", "/opt/second"], "MANPATH": ["/opt/find/man"]}


@dataclass(frozen=True)
class FindSite:
    root: SiteRoot
    wheels: Path


_cache: dict[Path, FindSite] = {}


def _toml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _spec(name: str, reqs: list[str], wheels: Path, *, description: str = "test stack",
          module: str = "") -> str:
    return (
        f"[stack]\nname = {_toml(name)}\npython = {_toml(sys.executable)}\nsite = \"findsite\"\n"
        f"description = {_toml(description)}\n\n"
        f"[packages]\nrequirements = [{', '.join(_toml(r) for r in reqs)}]\n"
        f"find-links = [{_toml(str(wheels))}]\nno-index = true\n\n"
        f"[tests]\nimports = [\"tinyapp\"]\n{module}"
    )


def find_site(workdir: Path, wheelhouse: Path) -> FindSite:
    """Build (once per session) and return the site described above."""
    from sitestack.build.stack import BuildLog, build
    from sitestack.core.layout import SiteRoot
    from sitestack.site.registry import Site
    from sitestack.site.spec import parse_spec

    if workdir in _cache:
        return _cache[workdir]
    wheels = workdir / "find-wheels"
    wheels.mkdir()
    for w in wheelhouse.iterdir():
        shutil.copy2(w, wheels / w.name)
    for v in ("2.3.5", "2.4.6"):
        make_wheel(wheels, "numpy", v, files={"numpy/__init__.py": f'__version__ = "{v}"\n'})
    root = SiteRoot(workdir / ROOT_NAME)
    root.path.mkdir()
    setenv = ", ".join(f"{k} = {_toml(v)}" for k, v in SETENV.items())
    prepend = ", ".join(f"{k} = [{', '.join(_toml(p) for p in ps)}]" for k, ps in PREPEND.items())
    module = f"\n[module]\nsetenv = {{ {setenv} }}\nprepend_path = {{ {prepend} }}\n"
    log = BuildLog(echo=False)
    for name, version, reqs, kw in (
        ("conda", "2023-01-01", ["numpy==2.3.5", "onlyold", "tinyapp"], {}),
        ("conda", "2024-01-01", ["numpy==2.3.5", "shadowme==1.0", "tinyapp"], {"description": EVIL}),
        ("conda", "2025-01-01", ["numpy==2.4.6", "shadowme==2.0", "tinyapp"], {"module": module}),
        ("tools", "1.0", ["tinyapp"], {}),
    ):
        build(parse_spec(_spec(name, reqs, wheels, **kw)), root, version=version, log=log)
    site = Site(root)
    site.set_default("conda/2025-01-01")
    site.hide("conda/2023-01-01")
    site.deprecate("conda/2024-01-01", DEPRECATION)
    _cache[workdir] = FindSite(root, wheels)
    return _cache[workdir]
