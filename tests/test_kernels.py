"""Jupyter kernels of stacks, layers and clones, started by real jupyter_client from a server
venv that is never a stack's, compared with what real Lmod's `module load` gives.

The stack (jk/1.0, ipykernel from its real wheels) is built once per session (conftest
`jupyter_stack`); this file adds jk/0.9 for the lifecycle test (deprecate, hide, retire's stub,
restore), which runs last.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import jupyter
from tests.helpers.cli import run_cli
from tests.helpers.env import clean_env
from tests.helpers.modules import run_module_script

if TYPE_CHECKING:
    from sitestack.core.records import StackRecord


def kernel_env(root: Path, home: Path, data: Path, **extra: str) -> dict[str, str]:
    """A Jupyter server's environment, with what it would leak into a careless kernel."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "JUPYTER_PATH": str(root / "share" / "jupyter"), "JUPYTER_DATA_DIR": str(data),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
           "PYTHONPATH": "/leak/pythonpath", "VIRTUAL_ENV": "/leak/venv", "PYTHONNOUSERSITE": "1"}
    return env | extra


def module_report(root: Path, home: Path, then: str = "") -> dict[str, Any]:
    """REPORT's fields in a real bash after real Lmod's `module load jk/1.0` (+ `then`)."""
    r = run_module_script("lmod", f"module use {shlex.quote(str(root / 'modulefiles'))}\n"
                                  f"module load jk/1.0\n{then}\npython -c {shlex.quote(jupyter.REPORT)}",
                          env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    return jupyter.report(r.stdout)


SAME = ("prefix", "userbase", "path0", "setting", "jk_path", "virtual_env", "stack", "clone")


@pytest.fixture(scope="module")
def jroot(jupyter_stack: StackRecord) -> Path:
    return jupyter_stack.root


def test_site_kernel_is_module_load(jupyter_stack: StackRecord, jroot: Path, tmp_path: Path) -> None:
    kdir = jroot / "share" / "jupyter" / "kernels" / "sitestack-jk-1.0"
    spec = json.loads((kdir / "kernel.json").read_text())
    assert spec["display_name"] == f"Python {jupyter_stack.python_xy} (jk/1.0, default)"
    assert spec["argv"][0] == str(kdir / "launch")
    for p in [kdir, *kdir.iterdir()]:  # read-only, for everyone to read
        assert os.stat(p).st_mode & 0o222 == 0 and os.stat(p).st_mode & 0o444 == 0o444, p
    home = tmp_path / "home dir"
    want = module_report(jroot, home)
    assert want["jupyter_path"].split(":")[0] == str(jroot / "share" / "jupyter")  # the modulefile's
    out = jupyter.probe("sitestack-jk-1.0", [jupyter.REPORT],
                        kernel_env(jroot, home, tmp_path / "data"), interrupt=True, restart=True)
    got = jupyter.report(out["replies"][0]["text"])
    assert {k: got[k] for k in SAME} == {k: want[k] for k in SAME}
    assert got["prefix"] == str(jupyter_stack.prefix) and got["setting"] == jupyter.SETTING
    assert got["userbase"] == str(home / ".local" / "testsite" / "jk" / "1.0")
    assert got["pythonpath"] is None and got["virtual_env"] is None  # the server's leaks are gone
    assert got["pid"] == out["launcher_pid"]  # the launcher exec'd: Jupyter signals the kernel itself
    assert out["interrupt"]["ename"] == "KeyboardInterrupt" and out["interrupt"]["seconds"] < 15
    assert out["after_interrupt"]["text"].strip() == "42"
    assert out["after_restart"]["status"] == "ok"
    assert int(out["after_restart"]["text"]) == out["restarted_pid"] != got["pid"]


@pytest.fixture(scope="module")
def envs(jupyter_stack: StackRecord, wheelhouse: Path, workdir: Path) -> dict[str, Path]:
    """A sitestack venv made with --kernel, a plain venv with a package of its own, a clone."""
    base = workdir / "kernel envs"
    base.mkdir()
    data = base / "data"
    env = clean_env(JUPYTER_DATA_DIR=str(data))
    root = str(jupyter_stack.root)
    r = run_cli("--root", root, "venv", "--stack", "jk/1.0", str(base / "proj" / "venv"), "--kernel", env=env)
    assert r.returncode == 0, r.stderr
    assert "kernel: proj-venv" in r.stdout
    plain = base / "plain"
    pip_env = {k: v for k, v in env.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    subprocess.run([str(jupyter_stack.python_exe), "-m", "venv", "--system-site-packages", str(plain)],
                   check=True, env=pip_env)
    subprocess.run([str(plain / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
                    "--find-links", str(wheelhouse), "layerpkg"], check=True, env=pip_env)
    r = run_cli("kernel", "add", str(plain), "--display-name", "Plain layer", env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("--root", root, "clone", "jk/1.0", "--prefix", str(base / "clone"), "--mode", "copy", env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("kernel", "add", str(base / "clone"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "clone"
    return {"data": data, "venv": base / "proj" / "venv", "plain": plain, "clone": base / "clone"}


def test_layer_and_clone_kernels_are_their_environments(jupyter_stack: StackRecord, jroot: Path,
                                                         envs: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    code = jupyter.REPORT + "\nimport shadowme, ipykernel; print(shadowme.__file__, ipykernel.__file__, sep='|')"
    def activate(p: Path) -> str:
        return f"source {shlex.quote(str(p / 'bin' / 'activate'))}"

    for kernel, path, then in (("proj-venv", envs["venv"], activate(envs["venv"])),
                               ("plain", envs["plain"], activate(envs["plain"])),
                               ("clone", envs["clone"], "module unload jk; " + activate(envs["clone"]))):
        want = module_report(jroot, home, then)
        out = jupyter.probe(kernel, [code, "import layerpkg; print('layerpkg ok')"],
                            kernel_env(jroot, home, envs["data"]))
        lines = out["replies"][0]["text"].strip().splitlines()
        got = jupyter.report(lines[0])
        assert got["prefix"] == str(path), kernel
        assert {k: got[k] for k in SAME} == {k: want[k] for k in SAME}, kernel
        shadowme, ipykernel = lines[1].split('|')
        if kernel == "clone":  # a clone's own copy of everything
            assert shadowme.startswith(str(path)) and ipykernel.startswith(str(path))
        else:  # the layer's python, the stack's packages: ipykernel needs no copy in the layer
            assert shadowme.startswith(str(jupyter_stack.prefix)) and ipykernel.startswith(str(jupyter_stack.prefix))
            assert not (path / "lib" / f"python{jupyter_stack.python_xy}" / "site-packages" / "ipykernel").exists()
        assert out["replies"][1]["status"] == ("ok" if kernel == "plain" else "error"), kernel
    r = run_cli("kernel", "list", "--json", env=clean_env(JUPYTER_DATA_DIR=str(envs["data"]),
                                                          JUPYTER_PATH=str(jroot / "share" / "jupyter")))
    listed = {k["name"]: k for k in json.loads(r.stdout)["kernels"]}
    assert listed["sitestack-jk-1.0"]["kind"] == "stack" and listed["plain"]["display_name"] == "Plain layer"
    assert {listed[n]["env"] for n in ("proj-venv", "plain", "clone")} == {str(envs[k]) for k in ("venv", "plain", "clone")}
    assert all(k["ok"] for k in listed.values())


def test_nbclient_runs_a_notebook_on_site_and_layer_kernels(jroot: Path, envs: dict[str, Path], tmp_path: Path) -> None:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "id": "a", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "import sys, shadowme\nx = 6 * 7\nprint(sys.prefix)"},
        {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "x"}]}
    src = tmp_path / "in.ipynb"
    src.write_text(json.dumps(nb))
    script = ("import sys, nbformat, nbclient\n"
              "nb = nbformat.read(sys.argv[1], 4)\n"
              "nbclient.NotebookClient(nb, kernel_name=sys.argv[2], timeout=120).execute()\n"
              "nbformat.write(nb, sys.argv[3])\n")
    for kernel, prefix in (("sitestack-jk-1.0", jroot / "stacks" / "jk" / "1.0"), ("proj-venv", envs["venv"])):
        out = tmp_path / f"{kernel}.ipynb"
        r = subprocess.run([str(jupyter.SERVER_PY), "-c", script, str(src), kernel, str(out)],
                           env=kernel_env(jroot, tmp_path / "home", envs["data"]), capture_output=True,
                           text=True, timeout=240)
        assert r.returncode == 0, r.stderr
        cells = json.loads(out.read_text())["cells"]
        text = "".join(cells[0]["outputs"][0]["text"])  # nbformat writes text as a list of lines
        assert text.strip() == str(prefix)
        assert "".join(cells[1]["outputs"][0]["data"]["text/plain"]) == "42"


def test_kernel_add_bad_input(jupyter_stack: StackRecord, envs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env(JUPYTER_DATA_DIR=str(data))
    kernels = data / "kernels"

    def add(*args: str, code: int) -> str:
        r = run_cli("kernel", "add", *args, env=env)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        if code:
            assert len(r.stderr.strip().splitlines()) <= 2 and r.stderr.startswith("sitestack: error:")
        return r.stdout + r.stderr

    assert "not an environment on a stack" in add(str(tmp_path), code=2)
    assert "site stack" in add(str(jupyter_stack.prefix), code=2)
    assert "no environment is active" in add(code=2)
    assert not kernels.exists() or not list(kernels.iterdir())  # nothing half-written
    out = add(envs["venv"].as_posix(), "--name", "My Env!", code=0)
    assert "kernel name 'my-env' (from 'My Env!'" in out and (kernels / "my-env" / "kernel.json").is_file()
    assert "is already the kernel of" in add(str(envs["plain"]), "--name", "my-env", code=5)
    add(str(envs["plain"]), "--name", "my-env", "--force", code=0)
    assert json.loads((kernels / "my-env" / "kernel.json").read_text())["metadata"]["sitestack"]["env"] == str(envs["plain"])
    add(str(envs["plain"]), "--name", "my-env", code=0)  # the same environment again: rewritten in place
    foreign = kernels / "theirs"
    foreign.mkdir()
    (foreign / "kernel.json").write_text(json.dumps({"argv": ["/usr/bin/python3", "-m", "ipykernel_launcher"],
                                                     "display_name": "theirs", "language": "python"}))
    before = (foreign / "kernel.json").read_bytes()
    assert "not written by sitestack" in add(str(envs["venv"]), "--name", "theirs", "--force", code=5)
    assert (foreign / "kernel.json").read_bytes() == before
    assert "--name" in add(str(envs["venv"]), "--name", "!!!", code=2)
    r = run_cli("kernel", "remove", "theirs", env=env)
    assert r.returncode == 2 and foreign.is_dir()
    assert run_cli("kernel", "remove", "my-env", env=env).returncode == 0 and not (kernels / "my-env").exists()
    # A kernel folder the user cannot write: exit 5, one line (as a real unprivileged user).
    from tests.helpers import users

    users.require_root()
    user = users.ensure_user()
    locked = tmp_path / "locked"
    (locked / "kernels").mkdir(parents=True)
    tmp_path.chmod(0o755)
    r = users.run_as(user, [str(jupyter_stack.python_exe), "-m", "sitestack", "kernel", "add", str(envs["venv"])],
                     env={"JUPYTER_DATA_DIR": str(locked), "PYTHONPATH": _user_pythonpath()})
    assert r.returncode == 5, r.stderr
    assert r.stderr.startswith("sitestack: error:") and "Traceback" not in r.stderr
    assert os.listdir(locked / "kernels") == []


def _user_pythonpath() -> str:
    import sitestack

    return str(Path(sitestack.__file__).parents[1])


def test_doctor_and_prune_find_stale_kernels(jupyter_stack: StackRecord, wheelhouse: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env(JUPYTER_DATA_DIR=str(data))
    root = str(jupyter_stack.root)
    gone, cut = tmp_path / "gone", tmp_path / "cut"
    for p in (gone, cut):
        assert run_cli("--root", root, "venv", "--stack", "jk/1.0", str(p), "--kernel", env=env).returncode == 0
    assert run_cli("inherit", str(cut), "off", env=env).returncode == 0
    from sitestack.core.fsutil import rmtree

    rmtree(gone)
    for name, argv in (("bare", ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]),
                       ("moved", [str(tmp_path / "nowhere" / "python"), "-m", "ipykernel_launcher"])):
        (data / "kernels" / name).mkdir()
        (data / "kernels" / name / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name}))
    r = run_cli("doctor", "--json", env=env)
    assert r.returncode == 1, r.stderr
    found = {Path(f["subject"]).name: f for f in json.loads(r.stdout)["findings"]}
    assert found["gone"]["kind"] == "kernel-env-deleted" and "sitestack kernel remove gone" in found["gone"]["fix"]
    assert found["cut"]["kind"] == "kernel-no-ipykernel" and f"sitestack inherit {cut} on" in found["cut"]["fix"]
    assert found["bare"]["kind"] == "kernel-bare-python"
    assert found["moved"]["kind"] == "kernel-argv-missing" and "jupyter kernelspec remove moved" in found["moved"]["fix"]
    r = run_cli("kernel", "prune", "--dry-run", env=env)
    assert "would remove gone" in r.stdout and (data / "kernels" / "gone").is_dir()
    r = run_cli("kernel", "prune", "--json", env=env)
    assert [k["name"] for k in json.loads(r.stdout)["removed"]] == ["gone"]
    assert not (data / "kernels" / "gone").exists() and (data / "kernels" / "cut").is_dir()
    assert (data / "kernels" / "bare").is_dir()  # never ours to remove


def test_kernel_true_without_ipykernel_is_a_spec_error(wheelhouse: Path, workdir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "nokernel.toml"
    spec.write_text(jupyter.spec("nok", wheelhouse, "\n[jupyter]\nkernel = true\n")
                    .replace('"ipykernel", ', ""))
    r = run_cli("--root", str(tmp_path / "root"), "build", str(spec), env=clean_env())
    assert r.returncode == 2, r.stderr
    assert "jupyter.kernel" in r.stderr and "ipykernel" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "root" / "stacks" / "nok").exists()


def test_lifecycle_deprecate_hide_retire_restore(jupyter_stack: StackRecord, jroot: Path, wheelhouse: Path,
                                                 tmp_path: Path) -> None:
    """jk/0.9: its kernel follows every state change; retired, it is a stub that runs nothing."""
    from sitestack.build.stack import BuildLog, build
    from sitestack.core.layout import SiteRoot
    from sitestack.site.spec import parse_spec

    build(parse_spec(jupyter.spec("jk", wheelhouse, '\n[jupyter]\ndisplay-name = "JK legacy"\n')),
          SiteRoot(jroot), version="0.9", log=BuildLog(echo=False))
    kdir = jroot / "share" / "jupyter" / "kernels" / "sitestack-jk-0.9"

    def display() -> str | None:
        f = kdir / "kernel.json"
        return json.loads(f.read_text())["display_name"] if f.is_file() else None

    def cli(*args: str) -> None:
        r = run_cli("--root", str(jroot), *args, env=clean_env())
        assert r.returncode == 0, r.stderr

    assert display() == "JK legacy"
    cli("deprecate", "jk/0.9", "--message", "moving on")
    assert display() == "JK legacy (deprecated)"
    cli("hide", "jk/0.9")
    assert display() is None  # hidden versions are not offered
    cli("unhide", "jk/0.9")
    assert display() == "JK legacy (deprecated)"
    data = tmp_path / "data"
    env = clean_env(JUPYTER_DATA_DIR=str(data))
    layer = tmp_path / "old layer"
    assert run_cli("--root", str(jroot), "venv", "--stack", "jk/0.9", str(layer), "--kernel", env=env).returncode == 0

    cli("retire", "jk/0.9", "--message", "numpy 1 is gone")
    spec = json.loads((kdir / "kernel.json").read_text())
    assert spec["metadata"]["sitestack"]["kind"] == "retired"
    marker = tmp_path / "ran"
    out = jupyter.probe("sitestack-jk-0.9", ["print('hello')", f"open({str(marker)!r}, 'w')"],
                        kernel_env(jroot, tmp_path / "home", data))
    import datetime

    msg = (f"jk/0.9 was retired on {datetime.date.today().isoformat()}: numpy 1 is gone; "
           f"use the kernel 'Python {jupyter_stack.python_xy} (jk/1.0, default)'")
    for reply in out["replies"]:
        assert reply["status"] == "error" and reply["ename"] == "StackRetired" and reply["errors"] == [msg]
        assert reply["text"] == ""
    assert not marker.exists()  # nothing ran
    r = run_cli("doctor", "--json", env=env)
    found = [f for f in json.loads(r.stdout)["findings"] if f["kind"] == "kernel-stack-retired"]
    assert len(found) == 1 and f"sitestack rebase {shlex.quote(str(layer))} jk/1.0 --allow-missing-stack" in found[0]["fix"]
    r = run_cli("rebase", str(layer), "jk/1.0", "--allow-missing-stack", "--no-index", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kernels"] == ["old-layer"]
    rebased = json.loads((data / "kernels" / "old-layer" / "kernel.json").read_text())
    assert rebased["metadata"]["sitestack"]["stack"] == "jk/1.0" and "jk/1.0" in rebased["display_name"]
    assert not [f for f in json.loads(run_cli("doctor", "--json", env=env).stdout)["findings"]
                if f["kind"].startswith("kernel-")]

    cli("restore", "jk/0.9")
    spec = json.loads((kdir / "kernel.json").read_text())
    assert spec["metadata"]["sitestack"]["kind"] == "stack" and spec["display_name"] == "JK legacy"
    out = jupyter.probe("sitestack-jk-0.9", ["import sys; print(sys.prefix)"], kernel_env(jroot, tmp_path / "home", data))
    assert out["replies"][0]["text"].strip() == str(jroot / "stacks" / "jk" / "0.9")


def test_launcher_renders_the_plan_in_sh(tmp_path: Path) -> None:
    """The launch script alone, with real sh and real Lmod: HOME as path_join reads it, an
    entry already on PATH moves to the front, a depends_on module outside the site is loaded
    with the module system the kernel finds (and named on stderr where there is none)."""
    import sys

    from sitestack.site.kernels import HOME_MARK, launcher
    from sitestack.site.modulefiles.content import apply_plan, path_join
    from tests.helpers.modules import LMOD_CMD, require

    require("lmod")
    mods = tmp_path / "mods" / "extlib"
    mods.mkdir(parents=True)
    (mods / "1.0.lua").write_text('setenv("EXTLIB_HOME", "/opt/extlib")\n')
    def plan(home: str) -> list[tuple[str, str, str]]:  # as env_plan makes one, for this HOME
        return [("prepend", "PATH", "/opt/a/bin"), ("set", "UB", path_join(home, ".local", "x")),
                ("prepend", "PATH", path_join(home, ".local", "x", "bin"))]

    ops = plan(HOME_MARK)
    show = "import os, json; print(json.dumps([os.environ.get(k) for k in ('PATH', 'UB', 'EXTLIB_HOME')]))"
    script = tmp_path / "launch"
    script.write_text(launcher(ops, sys.executable, ["-c", show], modules=("s/1", "extlib/1.0")))
    for home in ("/home/u", "/home/u/", "//home//u", "/", ""):
        base = {"PATH": "/usr/bin:/opt/a/bin:/bin", "HOME": home}
        r = subprocess.run(["/bin/sh", str(script)], env=base | {"LMOD_CMD": str(LMOD_CMD),
                           "MODULEPATH": str(tmp_path / "mods")}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        path, ub, ext = json.loads(r.stdout)
        want = apply_plan(base, plan(home))
        assert ub == want["UB"] and path == want["PATH"], home
        assert ext == "/opt/extlib"
    r = subprocess.run(["/bin/sh", str(script)], env={"PATH": "/usr/bin:/bin", "HOME": "/h"},
                       capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)[2] is None
    assert "s/1 needs the modules extlib/1.0" in r.stderr
