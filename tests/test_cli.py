"""The CLI shell: output into a pipe whose reader stops early, and empty results."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from sitestack.core.layout import SiteRoot
from sitestack.core.records import StackRecord
from tests.helpers.cli import run_cli
from tests.helpers.env import clean_env
from tests.helpers.stacks import BuildStack

SITESTACK = f"{shlex.quote(sys.executable)} -m sitestack"


def pipeline(cmd: str, reader: str, *, unbuffered: bool) -> tuple[int, int, str, str]:
    """Run `sitestack CMD | READER` in a real bash; (sitestack's status, the reader's, reader's
    stdout, sitestack's stderr)."""
    env = clean_env(**({"PYTHONUNBUFFERED": "1"} if unbuffered else {}))
    script = f'{SITESTACK} {cmd} | {reader}; echo "status=${{PIPESTATUS[0]}},${{PIPESTATUS[1]}}" >&2'
    r = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], capture_output=True,
                       text=True, env=env, timeout=120)
    *errs, status = r.stderr.rstrip("\n").split("\n")
    a, b = status.removeprefix("status=").split(",")
    return int(a), int(b), r.stdout, "\n".join(errs)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize(("cmd", "reader"), [
    ("list", "head -1"),
    ("list", "true"),
    ("list --json", "true"),
    ("show {ref}", "head -1"),
    ("show {ref}", "true"),
    ("show {ref} --json", "head -c 1"),
])
def test_a_reader_that_stops_early_ends_quietly(stack: StackRecord, site_root: SiteRoot, cmd: str,
                                                reader: str, unbuffered: bool) -> None:
    full = f"{cmd.format(ref=stack.ref)} --root {shlex.quote(str(site_root.path))}"
    code, reader_code, out, err = pipeline(full, reader, unbuffered=unbuffered)
    assert (code, reader_code) == (0, 0), err
    assert "Traceback" not in err and "BrokenPipeError" not in err and err == "", err
    if reader == "head -1":
        first = "stacks in" if cmd == "list" else f"{stack.ref}  (Python {stack.python}"
        assert out.startswith(first), out


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_reader_gone_before_the_first_write(stack: StackRecord, site_root: SiteRoot,
                                              unbuffered: bool) -> None:
    """The pipe's reader is closed before sitestack starts: every write meets EPIPE."""
    rfd, wfd = os.pipe()
    os.close(rfd)
    env = clean_env(**({"PYTHONUNBUFFERED": "1"} if unbuffered else {}))
    try:
        r = subprocess.run([sys.executable, "-m", "sitestack", "show", stack.ref, "--root", str(site_root.path)],
                           stdout=wfd, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(wfd)
    assert (r.returncode, r.stderr) == (0, "")


def test_an_error_into_a_closed_pipe_keeps_its_code(site_root: SiteRoot) -> None:
    code, _rc, _out, err = pipeline(f"show nosuch/1 --root {shlex.quote(str(site_root.path))}", "true",
                                    unbuffered=False)
    assert code == 2
    assert err.startswith("sitestack: error: no stack nosuch/1") or "no stack named 'nosuch'" in err, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def twins(build_stack: BuildStack) -> tuple[StackRecord, StackRecord]:
    """Two versions with the same packages and Python."""
    return (build_stack("twin", "1", ["tinyapp"]), build_stack("twin", "2", ["tinyapp"]))


def test_diff_of_equal_versions_says_so(twins: tuple[StackRecord, StackRecord], site_root: SiteRoot) -> None:
    a, b = twins
    r = run_cli("diff", a.ref, b.ref, "--root", str(site_root.path), env=clean_env(), check=True)
    assert r.stdout == f"{a.ref} and {b.ref}: no differences (Python {a.python}, same packages)\n"
    data = json.loads(run_cli("diff", a.ref, b.ref, "--json", "--root", str(site_root.path),
                              env=clean_env(), check=True).stdout)
    assert data == {"old": a.ref, "new": b.ref, "python": [a.python, b.python], "changes": []}


def test_diff_lists_changes(twins: tuple[StackRecord, StackRecord], stack: StackRecord, site_root: SiteRoot) -> None:
    a, _b = twins
    r = run_cli("diff", a.ref, stack.ref, "--root", str(site_root.path), env=clean_env(), check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["package", a.ref, stack.ref]
    assert ["shadowme", "-", "1.0"] in [ln.split() for ln in lines[1:]]
    assert "no differences" not in r.stdout


def test_list_of_an_empty_root_says_so(tmp_path: os.PathLike[str]) -> None:
    r = run_cli("list", "--root", str(tmp_path), env=clean_env(), check=True)
    assert r.stdout == f"no stacks in {tmp_path}\n"
    assert json.loads(run_cli("list", "--json", "--root", str(tmp_path), env=clean_env(), check=True).stdout) == []
