"""`sitestack venv`'s quick stack choice agrees with the slow one it stands in for.

user/stackchoice.quick_stack reads a stack's record without the site registry (for start-up time,
bench/venv.py): it either gives what the slow path gives, or None. (Its command line is parsed
by the walk of its declaration: tests/unit/test_options.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sitestack
from sitestack.user.stackchoice import QuickStack, choose_stack, quick_stack


def _record(prefix: Path, **data: object) -> None:
    (prefix / ".sitestack").mkdir(parents=True)
    (prefix / ".sitestack" / "stack.json").write_text(json.dumps(data), encoding="utf-8")


GOOD = {"name": "s", "version": "1", "site": "x", "python": "3.11.7", "python_xy": "3.11",
        "kind": "pypi", "packages": {"pip": "23"}, "module": {}, "files": 3, "bytes": 9, "user": {
            "find-links": [], "index-url": None, "extra-index-url": [], "no-index": False,
            "constraints": [], "only-binary": []}}


def _same(quick: QuickStack, slow: object) -> None:
    for attr in ("ref", "prefix", "root", "python", "python_xy", "python_exe", "site_packages"):
        assert getattr(quick, attr) == getattr(slow, attr), attr


def test_quick_stack_reads_what_the_registry_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITESTACK_PREFIX", raising=False)
    monkeypatch.delenv("SITESTACK_ROOT", raising=False)
    monkeypatch.delenv("SITESTACK_STACK_ROOT", raising=False)
    root = tmp_path / "site"
    _record(root / "stacks" / "s" / "1", **GOOD)
    quick = quick_stack("s/1", str(root))
    assert quick is not None
    monkeypatch.setattr("sitestack.user.stackchoice.quick_stack", lambda *a: None)
    slow = choose_stack("s/1", str(root))
    assert not isinstance(slow, QuickStack)
    _same(quick, slow)
    monkeypatch.setenv("SITESTACK_PREFIX", str(root / "stacks" / "s" / "1"))
    by_env = quick_stack(None, None)
    assert by_env is not None
    _same(by_env, choose_stack(None, None))


@pytest.mark.parametrize("change", [
    {"user": {"no-index": True}}, {"files": "many"}, {"packages": 3}, {"drop": "site"},
    {"drop": "python_xy"}, {"root": 5},
])
def test_quick_stack_leaves_the_unusual_to_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        change: dict[str, object]) -> None:
    monkeypatch.delenv("SITESTACK_PREFIX", raising=False)
    data = {**GOOD, **change}
    for key in [str(change["drop"])] if "drop" in change else []:
        data.pop(key)
        data.pop("drop")
    root = tmp_path / "site"
    _record(root / "stacks" / "s" / "1", **data)
    assert quick_stack("s/1", str(root)) is None


def test_quick_stack_needs_an_exact_version_and_a_safe_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITESTACK_PREFIX", raising=False)
    root = tmp_path / "si$te"
    _record(root / "stacks" / "s" / "1", **GOOD)
    assert quick_stack("s/1", str(root)) is None
    assert quick_stack("s", str(tmp_path / "site")) is None
    assert quick_stack("s/1/2", str(tmp_path / "site")) is None


def test_sitestack_venv_starts_without_typing_argparse_or_dataclasses(tmp_path: Path) -> None:
    """The whole `sitestack venv --root R --stack s/1 L` run, in a fresh interpreter: the layer is
    made, and none of the modules the start path is kept free of was imported."""
    prefix = tmp_path / "site" / "stacks" / "s" / "1"
    _record(prefix, **{**GOOD, "python_xy": f"{sys.version_info[0]}.{sys.version_info[1]}"})
    (prefix / "bin").mkdir()
    (prefix / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}").symlink_to(sys.executable)
    code = ("import sys; from sitestack.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, sorted(m for m in ('typing', 'argparse', 'dataclasses', 'inspect', 'shutil', "
            "'sitestack.site.registry', 'sitestack.core.records', 'sitestack.core.layout') if m in sys.modules))")
    src = str(Path(sitestack.__file__).parents[1])
    # -S: no site-packages, whose .pth files (an editable install's finder) import typing.
    out = subprocess.run([sys.executable, "-S", "-c", code, "venv", "--root", str(tmp_path / "site"),
                          "--stack", "s/1", str(tmp_path / "L")], capture_output=True, text=True,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "0 []"
    assert (tmp_path / "L" / "pyvenv.cfg").read_text().count("sitestack-stack = s/1") == 1
