"""`sitestack load` / `unload` in real bash, zsh, dash (and fish when installed), each from a
clean environment; compared with what real Lmod's `module load` does to the environment."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot

from tests.helpers import modules
from tests.helpers.findsite import DEPRECATION, PREPEND, SETENV, FindSite, find_site
from tests.helpers.modules import clean_env, run_module_script, strip_module_internals

SITESTACK = f"{shlex.quote(sys.executable)} -m sitestack"
SHELLS = {
    "bash": ["bash", "--noprofile", "--norc", "-c"],
    "zsh": ["zsh", "-f", "-c"],
    "sh": ["dash", "-c"],
    "fish": ["fish", "--no-config", "-c"],
}
SAVED = "_SITESTACK_SAVED"


@pytest.fixture(scope="module")
def fs(workdir: Path, wheelhouse: Path) -> FindSite:
    return find_site(workdir, wheelhouse)


def need(shell: str) -> list[str]:
    argv = SHELLS[shell]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} not installed (scripts/install-test-deps.sh)")
    return argv


def read_env(path: Path) -> dict[str, str]:
    items = [i for i in path.read_bytes().decode("utf-8", "surrogateescape").split("\0") if i]
    return dict(i.split("=", 1) for i in items)


def run_shell(shell: str, script: str, tmp_path: Path, env: dict[str, str | None] | None = None
              ) -> tuple[subprocess.CompletedProcess[str], list[dict[str, str]]]:
    """Run `script` in `shell`; every `SNAP` in it dumps the exported environment to a file."""
    argv = need(shell)
    snaps: list[Path] = []

    def snap(_: object = None) -> str:
        snaps.append(tmp_path / f"env-{shell}-{len(snaps)}")
        return f"env -0 > {shlex.quote(str(snaps[-1]))}"

    body = script + "true\n"  # zsh execs a last command in place, which changes its SHLVL
    while "SNAP" in body:
        body = body.replace("SNAP", snap(), 1)
    r = subprocess.run([*argv, body], env=clean_env({"HOME": str(tmp_path / "home"), **(env or {})}),
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, f"{shell}: {r.stdout}\n{r.stderr}"
    return r, [read_env(p) for p in snaps]


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, str | None]:
    return {k: after.get(k) for k in set(before) | set(after) if before.get(k) != after.get(k)}


def load_cmd(shell: str, root: Path, ref: str) -> str:
    code = f"{SITESTACK} --root {shlex.quote(str(root))} load {ref} --shell {shell}"
    return f"{code} | source" if shell == "fish" else f'eval "$({code})"'


def unload_cmd(shell: str) -> str:
    code = f"{SITESTACK} unload --shell {shell}"
    return f"{code} | source" if shell == "fish" else f'eval "$({code})"'


# What the user had before loading: one variable the spec sets, one it prepends to, and
# PYTHONUSERBASE; all must come back exactly.
USER_ENV = {"FIND_GREETING": "mine, with 'quotes' and $dollar", "MANPATH": "/usr/share/man",
            "PYTHONUSERBASE": "/home/me/pub"}


def test_same_environment_as_lmod(fs: FindSite, tmp_path: Path) -> None:
    """`module load` (real Lmod) and `eval "$(sitestack load)"` make the very same changes."""
    modules.require("lmod")
    (tmp_path / "home").mkdir()
    snap = modules.env_snapshot_script()
    mp = shlex.quote(str(fs.root.lmod_dir))
    for ref in ("conda", "conda/2024-01-01"):
        script = f"""module use {mp}
{snap}
module load {ref} 2>/dev/null
{snap}
module unload {ref.split('/')[0]}
{snap}
{load_cmd('bash', fs.root.path, ref)} 2>/dev/null
{snap}
{unload_cmd('bash')}
{snap}
"""
        r = run_module_script("lmod", script, env={"HOME": str(tmp_path / "home"), **USER_ENV})
        assert r.returncode == 0, r.stdout + r.stderr
        before, lmod_loaded, lmod_after, ours, ours_after = (
            strip_module_internals(s) for s in modules.parse_snapshots(r.stdout))
        lmod_changes = changes(before, lmod_loaded)
        assert lmod_changes["LMOD_FAMILY_PYTHON"] == "conda"  # family("python"), as Lmod sets it
        our_changes = changes(before, ours)
        assert our_changes.pop(SAVED) is not None
        assert our_changes == lmod_changes, ref
        assert lmod_after == before and ours_after == before
    # The spec's own variables were part of it (conda/2025-01-01 is the default).
    assert lmod_changes  # noqa: B023 (the last ref's, checked above)


EXT_LUA = 'setenv("EXT_HOME", "/opt/ext")\nprepend_path("PATH", "/opt/ext/bin")\n'


@pytest.fixture(scope="module")
def deps_root(workdir: Path, wheelhouse: Path) -> SiteRoot:
    """base/1.0 (no family), app/2.0 (family python, depends_on base and extmod), clash/1.0
    (family python, depends_on app: the same family twice)."""
    from sitestack.core.layout import SiteRoot
    from tests.helpers.stacks import make_builder

    root = SiteRoot(workdir / "site-deps")
    root.path.mkdir()
    b = make_builder(root, wheelhouse)
    b("base", "1.0", ["tinyapp"], extra='\n[module]\nfamily = ""\nsetenv = { BASE_HOME = "/opt/base" }\n'
                                         'prepend_path = { MANPATH = ["/opt/base/man"] }\n')
    b("app", "2.0", ["tinyapp"], default=True,
      extra='\n[module]\ndepends_on = ["base", "extmod"]\nsetenv = { APP_MODE = "fast" }\n')
    b("clash", "1.0", ["tinyapp"], extra='\n[module]\ndepends_on = ["app"]\n')
    return root


def test_depends_on_and_family_as_lmod(deps_root: SiteRoot, tmp_path: Path) -> None:
    """A stack whose depends_on names another stack of the site and a module the user's module
    system has loaded: `sitestack load` makes what real Lmod's `module load` makes (the
    dependency stack first, the family variables), and unload takes both stacks away."""
    modules.require("lmod")
    root = deps_root
    ext = tmp_path / "ext"
    (ext / "extmod").mkdir(parents=True)
    (ext / "extmod" / "1.lua").write_text(EXT_LUA)
    (tmp_path / "home").mkdir()
    snap = modules.env_snapshot_script()
    script = f"""module use {shlex.quote(str(root.lmod_dir))}
module use {shlex.quote(str(ext))}
module load extmod
{snap}
module load app 2>/dev/null
{snap}
module unload app
{snap}
{load_cmd('bash', root.path, 'app')}
{snap}
{unload_cmd('bash')}
{snap}
"""
    r = run_module_script("lmod", script, env={"HOME": str(tmp_path / "home"), **USER_ENV})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cannot load" not in r.stderr  # extmod is loaded: nothing to say
    before, lmod_loaded, lmod_after, ours, ours_after = (
        strip_module_internals(s) for s in modules.parse_snapshots(r.stdout))
    lmod_changes = changes(before, lmod_loaded)
    assert lmod_changes["BASE_HOME"] == "/opt/base" and lmod_changes["APP_MODE"] == "fast"
    assert lmod_changes["LMOD_FAMILY_PYTHON"] == "app" and lmod_changes["LMOD_FAMILY_PYTHON_VERSION"] == "2.0"
    our_changes = changes(before, ours)
    assert our_changes.pop(SAVED) is not None
    assert our_changes == lmod_changes
    assert lmod_after == before and ours_after == before
    # With no module system, the module it cannot run is named; the stack still loads.
    env = clean_env({"HOME": str(tmp_path / "home")})
    r2 = subprocess.run([sys.executable, "-m", "sitestack", "--root", str(root.path), "load", "app"],
                        env=env, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    assert r2.stderr.strip() == ("app/2.0 needs the modules extmod, which `sitestack load` cannot load: "
                                 "load them with your module system first")
    assert "export BASE_HOME=/opt/base;" in r2.stdout and "export LMOD_FAMILY_PYTHON=app;" in r2.stdout


def test_depends_on_a_stack_of_the_same_family_is_refused(deps_root: SiteRoot, tmp_path: Path) -> None:
    """clash (family python) depends on app (family python): Lmod never has both loaded (it
    swaps clash, the module asked for, out for app); sitestack refuses, naming both."""
    modules.require("lmod")
    script = f"module use {shlex.quote(str(deps_root.lmod_dir))}\nmodule load clash\n"
    r = run_module_script("lmod", script, env={"HOME": str(tmp_path)})
    assert 'replacing "clash/1.0" with "app/2.0"' in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "sitestack", "--root", str(deps_root.path), "load", "clash"],
                       env=clean_env({"HOME": str(tmp_path)}), capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert "clash/1.0 depends on app/2.0, of the same family 'python'" in r.stderr


@pytest.mark.parametrize("shell", list(SHELLS))
def test_load_unload_round_trip_in_each_shell(shell: str, fs: FindSite, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    root = fs.root.path
    script = f"""SNAP
{load_cmd(shell, root, "conda/2024-01-01")}
{load_cmd(shell, root, "conda")}
SNAP
python -c "import numpy, sys; print('NUMPY=' + numpy.__version__ + ' ' + sys.prefix)"
{unload_cmd(shell)}
SNAP
"""
    r, (before, loaded, after) = run_shell(shell, script, tmp_path, env=dict(USER_ENV))
    prefix = fs.root.prefix("conda", "2025-01-01")
    assert f"NUMPY=2.4.6 {prefix}" in r.stdout
    # Loading conda after conda/2024-01-01 swapped it out, as Lmod's family does.
    assert DEPRECATION in r.stderr
    ub = tmp_path / "home" / ".local" / "findsite" / "conda" / "2025-01-01"
    assert loaded["PATH"].split(":")[:2] == [str(ub / "bin"), str(prefix / "bin")]
    assert loaded["PYTHONUSERBASE"] == str(ub)
    assert loaded["SITESTACK_STACK"] == "conda/2025-01-01" and loaded["SITESTACK_PREFIX"] == str(prefix)
    assert loaded["SITESTACK_STACK_ROOT"] == str(root)
    for k, v in SETENV.items():
        assert loaded[k] == v
    assert loaded["FIND_PATH"] == ":".join(reversed(PREPEND["FIND_PATH"]))
    assert loaded["MANPATH"] == "/opt/find/man:/usr/share/man"
    assert after == before, changes(before, after)


def test_deprecated_unknown_and_nothing_loaded(fs: FindSite, tmp_path: Path) -> None:
    env = clean_env({"HOME": str(tmp_path)})
    base = [sys.executable, "-m", "sitestack", "--root", str(fs.root.path)]
    r = subprocess.run([*base, "load", "conda/2024-01-01"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == f"conda/2024-01-01 is deprecated: {DEPRECATION}"
    assert "export SITESTACK_STACK=conda/2024-01-01;" in r.stdout and DEPRECATION not in r.stdout
    r = subprocess.run([*base, "load", "nosuch"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("sitestack: error: no stack named 'nosuch'") and "Traceback" not in r.stderr
    r = subprocess.run([*base, "load", "conda/1999-01-01"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and "versions: 2023-01-01, 2024-01-01, 2025-01-01" in r.stderr
    r = subprocess.run([*base, "unload"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and "no stack was loaded with `sitestack load`" in r.stderr
    r = subprocess.run([*base, "unload"], env={**env, SAVED: "garbage"}, capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and f"${SAVED} is not what `sitestack load` wrote" in r.stderr


NASTY = ["plain", "", "it's", 'say "hi"', "$HOME ${X} $(id) `id`", "back\\slash\\n", "tab\tend",
         "line1\nline2", "semi; rm -rf /tmp/x", "é 日本 \U0001F40D", "-n", "a:b::c"]


@pytest.mark.parametrize("shell", list(SHELLS))
def test_quoting_round_trips(shell: str, tmp_path: Path) -> None:
    """The shell code sets every value exactly, whatever it contains."""
    from sitestack.user.shellenv import diff_code

    want = {f"NASTY_{i}": v for i, v in enumerate(NASTY)} | {"NASTY_PATH": "/a b/c:/d'e/$f"}
    (tmp_path / "home").mkdir()
    load, unload = tmp_path / "load code", tmp_path / "unload code"
    load.write_text(diff_code({}, want, shell))
    unload.write_text(diff_code(want, {}, shell))
    source = "." if shell == "sh" else "source"
    script = f"SNAP\n{source} {shlex.quote(str(load))}\nSNAP\n{source} {shlex.quote(str(unload))}\nSNAP\n"
    _, (before, after, back) = run_shell(shell, script, tmp_path)
    assert changes(before, after) == want
    assert back == before
