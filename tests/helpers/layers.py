"""Layers in tests: run a bash script, make a layer with the real CLI, look inside it."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from sitestack.core.manifest import Manifest, verify
from sitestack.core.records import StackRecord
from tests.helpers.cli import run_cli
from tests.helpers.env import clean_env


def sh(script: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], capture_output=True, text=True,
                       env=env or clean_env())
    if check and r.returncode != 0:
        raise AssertionError(f"script failed ({r.returncode}):\n{script}\n{r.stdout}\n{r.stderr}")
    return r


def make_layer(path: Path, root: Path, *args: str) -> Path:
    # The shared root holds several stack names (other tests add theirs), so name ours;
    # the fallback to a root's only stack is tested in tests/test_site.py.
    stack = () if "--stack" in args else ("--stack", "conda")
    run_cli("venv", str(path), "--root", str(root), *stack, *args, env=clean_env(), check=True)
    return path


def stack_untouched(rec: StackRecord) -> None:
    problems = verify(rec.prefix, Manifest.load(rec.records / "manifest.json"))
    assert problems == [], problems


def layer_sp(layer: Path) -> Path:
    return next((layer / "lib").glob("python*/site-packages"))


def pyrun(layer: Path, code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(layer / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          env=env or clean_env())


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "->" + os.readlink(p)
            elif os.path.isfile(p):
                out[rel] = hashlib.sha256(Path(p).read_bytes()).hexdigest() + oct(os.stat(p).st_mode)
            else:
                out[rel] = "dir" + oct(os.stat(p).st_mode)
    return out
