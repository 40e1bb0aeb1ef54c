"""The seed page's `conda` lines, verbatim, on a PyPI stack: an unprivileged user who installed
nothing, real Lmod and real Environment Modules, bash and zsh, job scripts and subshells.

The user starts from a clean environment whose PATH has no sitestack of its own: after
`module use ROOT/modulefiles; module load conda`, `conda` is the modulefile's shell function
and `sitestack` and the `conda` executable come from the site root (build/sitetool.py).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import Manifest, verify
from sitestack.core.records import StackRecord
from tests.helpers import modules, users
from tests.helpers.modules import (
    MODULE_SYSTEMS,
    clean_env,
    env_snapshot_script,
    init_snippet,
    parse_snapshots,
    run_module_script,
    strip_module_internals,
)
from tests.helpers.stacks import make_builder

SYSTEMS = pytest.mark.parametrize("system", MODULE_SYSTEMS)
SNAP = env_snapshot_script()


@pytest.fixture(scope="module")
def front(workdir: Path, wheelhouse: Path) -> tuple[SiteRoot, StackRecord]:
    """A PyPI stack whose [user] policy is the test wheelhouse (so `conda install` is offline)."""
    root = SiteRoot(workdir / "site-front")
    root.path.mkdir()
    b = make_builder(root, wheelhouse)
    rec = b("conda", "2022-07-19", ["shadowme==1.0", "tinyapp"], default=True, imports=["shadowme"],
            extra=f'\n[user]\nfind-links = ["{wheelhouse}"]\nno-index = true\n')
    return root, rec


@pytest.fixture()
def user(user_home: tuple[users.TestUser, Path]) -> users.TestUser:
    return user_home[0]


@pytest.fixture()
def home(user_home: tuple[users.TestUser, Path]) -> Path:
    """A fresh HOME of the test user's own (its ~/.conda, ~/.local start empty)."""
    return user_home[1]


def mp(root: SiteRoot, system: str) -> str:
    return shlex.quote(str(root.lmod_dir if system == "lmod" else root.tcl_dir))


def as_user(system: str, script: str, user: users.TestUser, home: Path) -> subprocess.CompletedProcess[str]:
    return run_module_script(system, script, user=user.name, env={"HOME": str(home)}, errexit=False)


def values(out: str) -> dict[str, list[str]]:
    """Every `KEY=value` line of the script's output (outside the snapshots), by key."""
    got: dict[str, list[str]] = {}
    inside = False
    for chunk in out.split("\0"):
        if chunk.startswith("@@SITESTACK-ENV-"):  # env_snapshot_script's markers
            inside = chunk.endswith("BEGIN@@")
            continue
        if inside:
            continue
        for line in chunk.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.isupper():
                got.setdefault(key, []).append(value)
    return got


def unchanged(rec: StackRecord) -> None:
    """The stack's tree is what its manifest says, file by file (sha256 and mode)."""
    assert verify(rec.prefix, Manifest.load(rec.prefix / ".sitestack" / "manifest.json"), check_mode=True) == []


@SYSTEMS
def test_seed_page_verbatim(system: str, front: tuple[SiteRoot, StackRecord], user: users.TestUser,
                            home: Path, wheelhouse: Path) -> None:
    root, rec = front
    script = f"""module use {mp(root, system)}
PS1='$ '
{SNAP}
echo "OWN=$(command -v sitestack || echo none)"
module load conda
conda activate base
echo "PROMPT=${{PS1@P}}"
echo "PY=$(which python3)"
echo "SITESTACK=$(command -v sitestack)"
echo "TYPE=$(type -t conda)"
conda create --clone base --prefix "$HOME/my envs/base-clone"
conda activate "$HOME/my envs/base-clone"
echo "PROMPT=${{PS1@P}}"
echo "PY=$(which python3)"
conda install -y userpkg
python3 -c "import userpkg, sys; print('USERPKG=' + userpkg.__file__)"
pip install -q --no-index --find-links {wheelhouse} layerpkg && echo "PIP=ok"
echo "UB=$PYTHONUSERBASE"
conda deactivate
echo "PROMPT=${{PS1@P}}"
echo "PY=$(which python3)"
conda deactivate
echo "PROMPT=${{PS1@P}}"
module unload conda
{SNAP}
"""
    r = as_user(system, script, user, home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    v = values(r.stdout)
    clone = home / "my envs" / "base-clone"
    assert v["OWN"] == ["none"]  # nothing of the user's own
    assert v["SITESTACK"][0].startswith(str(root.tools)) and v["TYPE"] == ["function"]
    assert v["PROMPT"] == ["(base) $ ", f"({clone}) $ ", "(base) $ ", "$ "]
    assert v["PY"] == [str(rec.prefix / "bin" / "python3"), str(clone / "bin" / "python3"),
                       str(rec.prefix / "bin" / "python3")]
    assert v["USERPKG"][0].startswith(str(clone / "lib"))
    assert v["PIP"] == ["ok"] and (clone / "lib" / f"python{rec.python_xy}" / "site-packages" / "layerpkg").is_dir()
    assert v["UB"][0].startswith(str(home / ".local" / "sitestack" / "clones"))
    assert "conda activate '" + str(clone) + "'" in r.stdout  # how to activate it, as conda says
    before, after = (strip_module_internals(s) for s in parse_snapshots(r.stdout))
    assert after == before
    unchanged(rec)


@SYSTEMS
def test_module_unload_with_environments_still_active(system: str, front: tuple[SiteRoot, StackRecord],
                                                      user: users.TestUser, home: Path) -> None:
    """`module unload` puts back PATH and every variable (those a user had before loading
    too), and removes the function, with a clone and a layer active on top of base."""
    root, rec = front
    script = f"""module use {mp(root, system)}
export VIRTUAL_ENV=/opt/mine CONDA_SHLVL=0 PYTHONUSERBASE=/opt/pub
PS1='$ '
{SNAP}
module load conda
conda create -q --clone base -p "$HOME/a clone" >/dev/null
sitestack venv "$HOME/a layer" >/dev/null
conda activate base
conda activate "$HOME/a clone"
conda activate --stack "$HOME/a layer"
echo "SHLVL=$CONDA_SHLVL"
echo "P1=$CONDA_PREFIX_1"
echo "P2=$CONDA_PREFIX_2"
echo "VENV=$VIRTUAL_ENV"
module unload conda
{SNAP}
echo "PROMPT=${{PS1@P}}"
type conda >/dev/null 2>&1 && echo "FUNCTION=left" || echo "FUNCTION=gone"
"""
    r = as_user(system, script, user, home)
    assert r.returncode == 0, r.stdout + r.stderr
    v = values(r.stdout)
    assert v["SHLVL"] == ["3"] and v["P1"] == [str(rec.prefix)] and v["P2"] == [str(home / "a clone")]
    assert v["VENV"] == [str(home / "a layer")]
    before, after = (strip_module_internals(s) for s in parse_snapshots(r.stdout))
    assert after == before, modules.env_diff(before, after)
    assert v["PROMPT"] == ["$ "] and v["FUNCTION"] == ["gone"]


ZSH_INIT = {"lmod": "source /usr/share/lmod/lmod/init/zsh"}


@SYSTEMS
def test_zsh(system: str, front: tuple[SiteRoot, StackRecord], user: users.TestUser, home: Path) -> None:
    modules.require(system)
    if shutil.which("zsh") is None:
        pytest.skip("zsh not installed (scripts/install-test-deps.sh)")
    root, rec = front
    init = ZSH_INIT.get(system) or init_snippet("tcl").replace(" bash autoinit", " zsh autoinit")
    script = f"""{init}
module use {mp(root, system)}
PS1='%# '
{SNAP}
module load conda
echo "TYPE=$(whence -w conda)"
conda activate
echo "PROMPT=$PS1"
conda create -q --clone base -n zclone >/dev/null
conda activate zclone
echo "PROMPT=$PS1"
echo "PY=$(which python3)"
conda deactivate
conda deactivate
echo "PROMPT=$PS1"
zsh -f -c 'eval "$(conda shell.zsh hook)"; conda activate zclone; echo "SUB=$CONDA_DEFAULT_ENV $(whence -w conda)"'
conda activate zclone
module unload conda
{SNAP}
echo "AFTER=$(whence -w conda)"
true
"""
    argv = users.setpriv_argv(user, ["zsh", "-f", "-c", script])
    r = subprocess.run(argv, env=clean_env({"HOME": str(home)}, user=user.name), cwd=home,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    v = values(r.stdout)
    clone = home / ".conda" / "envs" / "zclone"  # -n: the user's envs folder, as conda's
    assert v["TYPE"] == ["conda: function"]
    assert v["PROMPT"] == ["(base) %# ", "(zclone) %# ", "%# "]
    assert v["PY"] == [str(clone / "bin" / "python3")]
    assert v["AFTER"] == ["conda: none"] and v["SUB"] == ["zclone conda: function"]
    before, after = (strip_module_internals(s) for s in parse_snapshots(r.stdout))
    assert after == before, modules.env_diff(before, after)


@SYSTEMS
def test_job_script_and_subshell(system: str, front: tuple[SiteRoot, StackRecord], user: users.TestUser,
                                 home: Path) -> None:
    """A job script run as `bash job.sh` (loading the module itself, as the seed page says to,
    or relying on the shell that submitted it), and a subshell with the hook."""
    root, rec = front
    (home / "job.sh").write_text(f"""set -e
{init_snippet(system)}
module use {mp(root, system)}
module load conda; conda activate
echo "JOB=$(which python3) $CONDA_DEFAULT_ENV"
""")
    (home / "hook.sh").write_text("""set -e
eval "$(conda shell.bash hook)"
conda activate base
echo "HOOK=$(which python3) $CONDA_SHLVL"
conda deactivate
echo "HOOKED=${CONDA_SHLVL:-unset}"
""")
    (home / "nohook.sh").write_text("conda activate base\necho \"RC=$?\"\n")
    script = f"""module use {mp(root, system)}
module load conda
bash "$HOME/job.sh"
bash "$HOME/hook.sh"
bash -c 'eval "$(conda shell.posix hook)"; conda activate base; echo "POSIX=$CONDA_DEFAULT_ENV"'
env -u BASH_FUNC_conda%% bash --norc "$HOME/nohook.sh" 2>"$HOME/err"
echo "ERR=$(cat "$HOME/err")"
"""
    r = as_user(system, script, user, home)
    assert r.returncode == 0, r.stdout + r.stderr
    v = values(r.stdout)
    py = str(rec.prefix / "bin" / "python3")
    assert v["JOB"] == [f"{py} base"]
    assert v["HOOK"] == [f"{py} 1"] and v["HOOKED"] == ["unset"]
    assert v["POSIX"] == ["base"]
    # Without the function (Lmod does not pass it to subshells): one line saying what to do.
    assert v["RC"] == ["2"]
    assert v["ERR"][0].startswith("conda: error: conda activate changes your shell") and len(v["ERR"]) == 1
    assert 'eval "$(conda shell.bash hook)"' in r.stdout


def test_layers_and_venvs_at_paths_with_spaces(front: tuple[SiteRoot, StackRecord], user: users.TestUser,
                                               home: Path) -> None:
    """A `sitestack venv` layer and a plain `python -m venv --system-site-packages` venv, by path:
    activated, installed into (through `sitestack install`: only what the stack lacks), removed
    from, deactivated; `conda env list` shows what the front door knows."""
    root, rec = front
    script = f"""module use {mp(root, "lmod")}
module load conda
sitestack venv "$HOME/my layer" >/dev/null
python3 -m venv --system-site-packages "$HOME/plain venv"
conda activate "$HOME/my layer"
echo "VENV=$VIRTUAL_ENV"
echo "PY=$(which python)"
conda install layerpkg numpy=1.26 2>"$HOME/err" || echo "NUMPY=$(head -c 300 "$HOME/err")"
conda install layerpkg
python -c "import layerpkg, shadowme; print('LAYERPKG=' + layerpkg.__file__); print('SHADOWME=' + shadowme.__file__)"
conda remove layerpkg
python -c "import layerpkg" 2>/dev/null || echo "REMOVED=yes"
conda remove shadowme 2>"$HOME/err" || echo "STACKPKG=$(cat "$HOME/err" | head -1)"
conda activate "$HOME/plain venv"
echo "VENV=$VIRTUAL_ENV"
echo "PY=$(which python)"
conda env list
conda deactivate
echo "VENV=$VIRTUAL_ENV"
conda deactivate
echo "VENV=${{VIRTUAL_ENV:-unset}}"
"""
    r = as_user("lmod", script, user, home)
    assert r.returncode == 0, r.stdout + r.stderr
    v = values(r.stdout)
    layer, plain = home / "my layer", home / "plain venv"
    assert v["VENV"] == [str(layer), str(plain), str(layer), "unset"]
    assert v["PY"] == [str(layer / "bin" / "python"), str(plain / "bin" / "python")]
    assert v["LAYERPKG"][0].startswith(str(layer)) and v["SHADOWME"][0].startswith(str(rec.prefix))
    assert v["REMOVED"] == ["yes"]
    assert "shadowme is not installed in the layer" in v["STACKPKG"][0] and "read-only" in v["STACKPKG"][0]
    # numpy=1.26 was read as numpy==1.26.* (and the offline wheelhouse has none)
    assert "numpy" in v["NUMPY"][0]
    assert "packages come from the Python package index the site configured (find-links" in r.stdout
    envs = r.stdout.split("# conda environments:")[1]
    assert str(layer) in envs and str(plain) in envs and str(rec.prefix) in envs
    unchanged(rec)


@SYSTEMS
def test_install_with_base_active_is_refused(system: str, front: tuple[SiteRoot, StackRecord],
                                             user: users.TestUser, home: Path) -> None:
    root, rec = front
    script = f"""module use {mp(root, system)}
module load conda
conda install userpkg 2>"$HOME/e1"; echo "RC1=$?"
conda activate base
conda install -y userpkg 2>"$HOME/e2"; echo "RC2=$?"
conda remove shadowme 2>"$HOME/e3"; echo "RC3=$?"
"""
    r = as_user(system, script, user, home)
    assert r.returncode == 0, r.stdout + r.stderr
    v = values(r.stdout)
    assert v["RC1"] == ["5"] and v["RC2"] == ["5"] and v["RC3"] == ["5"]
    for name in ("e1", "e2", "e3"):
        err = (home / name).read_text().splitlines()
        assert len(err) == 2 and "Traceback" not in "".join(err)
        assert err[0].startswith("conda: error: the base environment is the site's stack conda/2022-07-19")
        assert "read-only" in err[0] and str(rec.prefix) in err[0]
        assert "conda create --clone base -p DIR" in err[1] and "python -m venv --system-site-packages DIR" in err[1]
        assert "sitestack venv DIR" in err[1]
    unchanged(rec)


MAKE_CLONE = 'conda create -q --clone base -p "$HOME/c" >/dev/null; conda activate "$HOME/c"'
BAD = [  # (what, set-up, the bad command, exit code, what its one line says)
    ("activate of a folder that is not an environment", 'mkdir -p "$HOME/just a dir"',
     'conda activate "$HOME/just a dir"', 2, "is not an environment (not a sitestack clone"),
    ("activate of a missing folder", "", 'conda activate "$HOME/nowhere/x"', 2, "no such folder"),
    ("activate of an unknown name", "", "conda activate nosuchenv", 2, "no environment named 'nosuchenv'"),
    ("create into an existing folder", 'mkdir -p "$HOME/taken/x"; touch "$HOME/taken/x/f"',
     'conda create --clone base -p "$HOME/taken/x"', 5, "already exists"),
    ("install with a channel", MAKE_CLONE, "conda install -c conda-forge numpy", 2, "channel conda-forge refused"),
    ("install with a channel-pinned package", MAKE_CLONE, "conda install conda-forge::numpy", 2,
     "channel conda-forge refused"),
    ("an unknown subcommand", "", "conda frobnicate", 2, "conda frobnicate is not part of sitestack's conda front door"),
    ("another conda subcommand", "", "conda update numpy", 2, "conda install PKG=VERSION"),
    ("a broken saved state", "", "_SITESTACK_CONDA='{\"v\": 1, \"levels\": 7}' conda deactivate", 2,
     "is not what the conda front door wrote"),
    ("a bad level number", "", "CONDA_SHLVL=lots conda activate base", 2, "is not a level number"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_one_line_shell_unchanged(case: tuple[str, str, str, int, str], front: tuple[SiteRoot, StackRecord],
                                            user: users.TestUser, home: Path) -> None:
    _what, setup, command, code, message = case
    root, rec = front
    script = f"""module use {mp(root, "lmod")}
module load conda
PS1='$ '
conda activate base
{setup}
{SNAP}
echo "PS1BEFORE=$PS1"
{command} 2>"$HOME/err"
echo "RC=$?"
echo "PS1AFTER=$PS1"
{SNAP}
"""
    r = as_user("lmod", script, user, home)
    v = values(r.stdout)
    err = (home / "err").read_text()
    assert v["RC"] == [str(code)], (r.stdout, err)
    lines = err.splitlines()
    assert lines[0].startswith("conda: error: ") and message in lines[0], err
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), err
    assert "Traceback" not in err and "Traceback" not in r.stderr
    before, after = (strip_module_internals(s) for s in parse_snapshots(r.stdout))
    assert after == before and v["PS1BEFORE"] == v["PS1AFTER"]
    unchanged(rec)


def test_list_info_env_list_run_version(front: tuple[SiteRoot, StackRecord], user: users.TestUser,
                                        home: Path) -> None:
    root, rec = front
    script = f"""module use {mp(root, "tcl")}
module load conda
conda --version
conda create -q --clone base -n work >/dev/null
conda run -n work python3 -c "import sys; print('RUN=' + sys.prefix)"
conda run python3 -c "import sys; print('RUNBASE=' + sys.prefix)"
conda activate work
conda list
conda info
conda info --envs
echo "RCRUN=$(conda run -n work false; echo $?)"
"""
    r = as_user("tcl", script, user, home)
    assert r.returncode == 0, r.stdout + r.stderr
    v = values(r.stdout)
    clone = home / ".conda" / "envs" / "work"
    assert "sitestack 0.1.0: the conda front door for conda/2022-07-19 (this is not conda" in r.stdout
    assert v["RUN"] == [str(clone)] and v["RUNBASE"] == [str(rec.prefix)] and v["RCRUN"] == ["1"]
    assert f"# packages in environment at {clone}:" in r.stdout
    assert any(line.split()[:2] == ["shadowme", "1.0"] for line in r.stdout.splitlines())
    assert f"active env location : {clone}" in r.stdout and "(read-only)" in r.stdout
    assert "package source : the Python package index the site configured (find-links" in r.stdout
    envs = r.stdout.split("# conda environments:")[1].splitlines()
    assert any(line.split() == ["base", str(rec.prefix)] for line in envs)
    assert any(line.split() == ["work", "*", str(clone)] for line in envs)


def test_users_sitestack_is_the_sites(front: tuple[SiteRoot, StackRecord], user: users.TestUser,
                                      home: Path) -> None:
    """The sitestack users run lives under the site root, read-only, with its own Python: it
    runs for a user who cannot read the builder's environment (/root), whatever stack is
    loaded, and a second build reuses it."""
    root, rec = front
    from sitestack.site.sitetool import current_tool

    tool = current_tool(root)
    assert tool is not None and tool.parent == root.tools
    assert not any(p.stat().st_mode & 0o222 for p in [tool, *tool.rglob("*")] if not p.is_symlink())
    exe = tool / "python" / "bin"
    assert not (exe / "python3").resolve().is_relative_to("/root")
    r = users.run_as(user, [str(tool / "bin" / "sitestack"), "--version"],
                     env={"HOME": str(home), "PYTHONPATH": "/nonexistent", "PYTHONHOME": "/nonexistent"})
    assert r.returncode == 0 and r.stdout.startswith("sitestack "), r.stderr
    r = users.run_as(user, [str(tool / "bin" / "sitestack"), "list", "--root", str(root.path)],
                     env={"HOME": str(home)})
    assert r.returncode == 0 and "2022-07-19" in r.stdout, r.stderr
    # Everything it runs is its own: no file of the build environment (which users cannot
    # read anyway), none of the loaded stack's.
    probe = ("import sys, sitestack, packaging, uv, filelock, rich, zstandard\n"
             "from sitestack.core.uvtool import uv_bin\n"
             "print('\\n'.join([sys.prefix, *sys.path, *(m.__file__ or '' for m in list(sys.modules.values())"
             " if getattr(m, '__file__', None)), uv_bin()]))")
    r = users.run_as(user, [str(exe / "python3"), "-I", "-c", probe],
                     env={"HOME": str(home), "PATH": f"{rec.prefix}/bin:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    paths = [line for line in r.stdout.splitlines() if line.startswith("/")]
    assert paths and all(line.startswith(str(tool)) for line in paths), [x for x in paths if not x.startswith(str(tool))]
    from sitestack.build.sitetool import ensure_tool

    assert ensure_tool(root) == tool  # unchanged sitestack: the same folder, nothing new
    assert sorted(p.name for p in root.tools.iterdir()) == [tool.name]


def test_sitestack_load_is_a_renderer_too(front: tuple[SiteRoot, StackRecord], tmp_path: Path) -> None:
    """Without a module system: `eval "$(sitestack load conda)"` defines the same function, and
    `sitestack unload` takes back what the front door added too (a clone still active)."""
    from sitestack.site.sitetool import current_tool

    root, rec = front
    tool = current_tool(root)
    assert tool is not None
    (tmp_path / "home").mkdir()
    script = f"""PS1='$ '
{SNAP}
eval "$({shlex.quote(str(tool / "bin" / "sitestack"))} --root {shlex.quote(str(root.path))} load conda)"
echo "TYPE=$(type -t conda)"
conda activate base
conda create -q --clone base -p "$HOME/a clone" >/dev/null
conda activate "$HOME/a clone"
echo "PY=$(which python3)"
eval "$(sitestack unload)"
{SNAP}
echo "PROMPT=${{PS1@P}}"
echo "AFTER=$(type -t conda || echo none)"
"""
    r = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], capture_output=True, text=True,
                       env=clean_env({"HOME": str(tmp_path / "home")}), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    v = values(r.stdout)
    assert v["TYPE"] == ["function"] and v["PY"] == [str(tmp_path / "home" / "a clone" / "bin" / "python3")]
    assert v["PROMPT"] == ["$ "] and v["AFTER"] == ["none"]
    before, after = parse_snapshots(r.stdout)
    assert after == before, modules.env_diff(before, after)
