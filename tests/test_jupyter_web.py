"""The site's kernels where people use them: JupyterLab in Debian's Chromium (Playwright), and
JupyterHub with its dummy authenticator, the simple local spawner and configurable-http-proxy.

Both servers run from the Jupyter venv install-test-deps makes (never a stack), on 127.0.0.1.
Screenshots go to tmp_path (and to $SITESTACK_TEST_SCREENSHOTS when set, to look at them).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import jupyter
from tests.helpers.cli import run_cli
from tests.helpers.env import clean_env

if TYPE_CHECKING:
    from sitestack.core.records import StackRecord

CHROMIUM = Path("/usr/bin/chromium")


def free_ports(n: int) -> list[int]:
    """N distinct free ports: the sockets stay bound until all are chosen (one at a time, the
    kernel hands the port just closed out again: the hub once got its proxy's port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120,
              headers: dict[str, str] | None = None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def server_env(root: Path, home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return clean_env(HOME=str(home), JUPYTER_PATH=str(root / "share" / "jupyter"),
                     JUPYTER_DATA_DIR=str(home / "data"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                     JUPYTER_CONFIG_DIR=str(home / "config"), IPYTHONDIR=str(home / "ipython"), **extra)


@pytest.fixture()
def lab(jupyter_stack: StackRecord, tmp_path: Path) -> Iterator[str]:
    (port,), token = free_ports(1), secrets.token_hex(16)
    log = tmp_path / "lab.log"
    work = tmp_path / "notebooks"
    work.mkdir()
    # No "get notified about Jupyter news?" toast over the notebook (and no fetch of the news:
    # the suite has no network): the settings a user's answer "No" writes.
    settings = tmp_path / "home" / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(jupyter.SERVER / "bin" / "jupyter-lab"), "--no-browser", "--allow-root", f"--port={port}",
             "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}"],
            env=server_env(jupyter_stack.root, tmp_path / "home"), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield f"http://127.0.0.1:{port}/lab?token={token}"
    finally:
        stop(proc)


def keep(shot: Path) -> None:
    dest = os.environ.get("SITESTACK_TEST_SCREENSHOTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(dest) / shot.name)


def type_cell(page: Any, code: str) -> None:
    """Type CODE into the first cell, in edit mode, and see that it landed there.

    Keys typed while the notebook is still in command mode are commands ('m' makes the cell
    markdown, 'i i' interrupts): on a loaded machine (CI) the click can come before the editor
    takes the focus, and the cell then never gives an output. So wait for edit mode, and retype
    until the editor holds exactly CODE.
    """
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    for _ in range(5):
        editor.click()
        try:
            page.locator(".jp-Notebook.jp-mod-editMode").first.wait_for(timeout=10_000)
        except Exception:  # playwright's TimeoutError: click again
            continue
        page.keyboard.press("Control+a")
        page.keyboard.type(code)
        if editor.inner_text().strip() == code:
            return
    raise AssertionError(f"could not type into the notebook's cell: {editor.inner_text()!r}")


def run_first_cell(page: Any, out: Any, tmp_path: Path) -> None:
    """Run the first cell (Control+Enter: it stays selected) until OUT shows.

    On a loaded CI machine a run key was once lost: the cell never ran (its prompt stayed
    "[ ]:") while the kernel sat idle. A cell that did run ("[*]:" or "[1]:") is waited for,
    never run twice; one that did not is run again. A kernel that never answers still fails.
    """
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputArea-prompt").first
    for _ in range(4):
        editor.click()
        page.keyboard.press("Control+Enter")
        try:
            out.wait_for(timeout=30_000)
            return
        except Exception:  # playwright's TimeoutError
            if prompt.inner_text().strip() not in ("[ ]:", ""):
                break  # it ran, or runs: wait for it below
    try:
        out.wait_for(timeout=90_000)
    except Exception:
        page.screenshot(path=str(tmp_path / "kernel-no-output.png"))
        keep(tmp_path / "kernel-no-output.png")
        raise AssertionError(f"the cell gave no output; its prompt: {prompt.inner_text()!r}") from None


def test_jupyterlab_launcher_runs_the_stack_kernel(jupyter_stack: StackRecord, lab: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    title = f"Python {jupyter_stack.python_xy} (jk/1.0, default)"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(lab)
            card = page.locator(".jp-LauncherCard[data-category='Notebook']", has_text=title)
            card.first.wait_for(timeout=90_000)
            page.screenshot(path=str(tmp_path / "kernel-launcher.png"))
            keep(tmp_path / "kernel-launcher.png")
            card.first.click()
            idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            idle.first.wait_for(timeout=90_000)  # the kernel is up: typing before this is lost
            type_cell(page, "import sys, os; print(sys.prefix, os.environ['JK_SETTING'], 6 * 7)")
            out = page.locator(".jp-OutputArea-output").first
            run_first_cell(page, out, tmp_path)
            text = out.inner_text()
            page.screenshot(path=str(tmp_path / "kernel-notebook.png"))
            keep(tmp_path / "kernel-notebook.png")
            assert (tmp_path / "kernel-notebook.png").stat().st_size > 10_000
            assert text.strip() == f"{jupyter_stack.prefix} {jupyter.SETTING} 42"
            status = page.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
            assert status in ("idle", "busy")
            assert title in page.content()  # the kernel's name in the notebook's toolbar
        finally:
            browser.close()


def test_jupyterhub_user_sees_site_and_own_kernels(jupyter_stack: StackRecord, tmp_path: Path) -> None:
    if not jupyter.CHP.is_file():
        pytest.skip("configurable-http-proxy missing: run scripts/install-test-deps.sh")
    root = jupyter_stack.root
    homes = tmp_path / "homes"
    alice = homes / "alice"
    alice.mkdir(parents=True)
    # Her own layer, registered in her default data folder (~/.local/share/jupyter).
    env = clean_env(HOME=str(alice))
    r = run_cli("--root", str(root), "venv", "--stack", "jk/1.0", str(alice / "analysis"), "--kernel", env=env)
    assert r.returncode == 0, r.stderr
    assert (alice / ".local" / "share" / "jupyter" / "kernels" / "analysis" / "kernel.json").is_file()
    (port, hub_port, api_port), token = free_ports(3), secrets.token_hex(16)
    cfg = tmp_path / "jupyterhub_config.py"
    cfg.write_text("\n".join([
        'c.JupyterHub.authenticator_class = "dummy"',
        "c.Authenticator.allow_all = True",
        'c.JupyterHub.spawner_class = "simple"',
        f"c.SimpleLocalProcessSpawner.home_dir_template = {str(homes / '{username}')!r}",
        # The one line docs/jupyter.md gives a hub: the site's kernels for every user.
        f"c.Spawner.environment = {{'JUPYTER_PATH': {str(root / 'share' / 'jupyter')!r}}}",
        f"c.Spawner.cmd = [{str(jupyter.SERVER / 'bin' / 'jupyterhub-singleuser')!r}]",
        'c.Spawner.args = ["--allow-root"]',
        "c.Spawner.start_timeout = 120",
        "c.Spawner.http_timeout = 120",
        f'c.JupyterHub.bind_url = "http://127.0.0.1:{port}"',
        'c.JupyterHub.hub_ip = "127.0.0.1"',
        f"c.JupyterHub.hub_port = {hub_port}",
        f"c.ConfigurableHTTPProxy.command = [{str(jupyter.CHP)!r}]",
        # Not the proxy's default API port 8001, which another hub (or test run) may hold.
        f'c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"',
        f"c.JupyterHub.db_url = 'sqlite:///{tmp_path / 'hub.sqlite'}'",
        f"c.JupyterHub.cookie_secret_file = {str(tmp_path / 'cookie_secret')!r}",
        f"c.ConfigurableHTTPProxy.pid_file = {str(tmp_path / 'proxy.pid')!r}",
        f"c.JupyterHub.services = [{{'name': 'tester', 'api_token': {token!r}}}]",
        "c.JupyterHub.load_roles = [{'name': 'tester', 'services': ['tester'], "
        "'scopes': ['admin:users', 'admin:servers', 'access:servers']}]",
    ]) + "\n")
    log = tmp_path / "hub.log"
    hub_env = clean_env(HOME=str(tmp_path), PATH=f"{jupyter.SERVER / 'bin'}:/usr/local/bin:/usr/bin:/bin")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(jupyter.SERVER / "bin" / "jupyterhub"), "-f", str(cfg)], cwd=tmp_path,
                                env=hub_env, stdout=out, stderr=subprocess.STDOUT)
    auth = {"Authorization": f"token {token}"}
    base = f"http://127.0.0.1:{port}"

    def api(method: str, path: str) -> Any:
        req = urllib.request.Request(base + path, method=method, headers=auth)
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    try:
        wait_http(f"{base}/hub/api", proc, log)
        api("POST", "/hub/api/users/alice")
        api("POST", "/hub/api/users/alice/server")
        t0 = time.monotonic()
        while not (api("GET", "/hub/api/users/alice").get("servers", {}).get("", {}).get("ready")):
            assert time.monotonic() - t0 < 150, log.read_text()[-3000:]
            time.sleep(1)
        specs = api("GET", "/user/alice/api/kernelspecs")["kernelspecs"]
        names = {n: s["spec"]["display_name"] for n, s in specs.items()}
        assert names["sitestack-jk-1.0"] == f"Python {jupyter_stack.python_xy} (jk/1.0, default)"
        assert names["analysis"] == f"Python {jupyter_stack.python_xy} (analysis on jk/1.0)"
        api("DELETE", "/hub/api/users/alice/server")
    finally:
        stop(proc)
        pid = tmp_path / "proxy.pid"
        if pid.is_file():  # the hub stops its proxy; make sure of it
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid.read_text().strip()), 15)
