"""Bad specs: exit code 2, one line naming the key, no traceback, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sitestack.errors import SpecError
from sitestack.site.spec import parse_spec
from tests.conftest import run_cli

GOOD = f"""
[stack]
name = "conda"
python = "{sys.executable}"
site = "polaris"
description = "ok"

[packages]
requirements = ["numpy>=1.26"]
find-links = ["wheels"]
no-index = true
[packages.build.mpi4py]
no-binary = true
env = {{ MPICC = "cc" }}

[module]
depends_on = ["PrgEnv-gnu"]
setenv = {{ MPICH_GPU_SUPPORT_ENABLED = "1" }}
prepend_path = {{ LD_LIBRARY_PATH = ["/soft/nccl/lib"] }}
help = "help"

[tests]
imports = ["numpy"]
commands = ["python -c 'import numpy'"]
"""


def test_good_spec_parses(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    from sitestack.site.spec import load_spec

    spec = load_spec(path)
    assert spec.name == "conda" and spec.site == "polaris"
    assert spec.packages.find_links == (str(tmp_path / "wheels"),)  # relative to the spec file
    assert spec.packages.build["mpi4py"].no_binary is True
    assert dict(spec.packages.build["mpi4py"].env) == {"MPICC": "cc"}
    assert spec.packages.build["mpi4py"].build_isolation is True  # uv's default unless the spec says
    assert spec.module.prepend_path == {"LD_LIBRARY_PATH": ("/soft/nccl/lib",)}
    assert spec.module.family == "python"


BAD = [
    ("[stack]\npython='3.11'\n", "stack.name", "missing"),
    ("[packages]\nrequirements=[]\n", "stack", "missing table"),
    ('[stack]\nname="a"\ncolour="red"\n', "stack.colour", "unknown key"),
    ('[stack]\nname="a"\n[extras]\nx=1\n', "extras", "unknown table"),
    ('[stack]\nname=3\n', "stack.name", "must be a string"),
    ('[stack]\nname="a/b"\n', "stack.name", "must not contain"),
    ('[stack]\nname="a b"\n', "stack.name", "must not contain"),
    ('[stack]\nname="..x"\n', "stack.name", "must not contain"),
    ('[stack]\nname="a"\n[packages]\nrequirements="numpy"\n', "packages.requirements", "must be a list"),
    ('[stack]\nname="a"\n[packages]\nrequirements=["numpy>>1"]\n', "packages.requirements[0]", "invalid requirement"),
    ('[stack]\nname="a"\n[packages]\nrequirements=[1]\n', "packages.requirements[0]", "must be a string"),
    ('[stack]\nname="a"\n[packages]\nno-index="yes"\n', "packages.no-index", "true or false"),
    ('[stack]\nname="a"\n[packages.build.x]\nflags=1\n', "packages.build.x.flags", "unknown key"),
    ('[stack]\nname="a"\n[packages.build.x]\nbuild-isolation="no"\n', "packages.build.x.build-isolation",
     "true or false"),
    ('[stack]\nname="a"\n[module]\nsetenv={"1BAD"="x"}\n', "module.setenv.1BAD", "not a valid environment variable"),
    ('[stack]\nname="a"\n[tests]\nimports=["x", 2]\n', "tests.imports[1]", "must be a string"),
    ('[stack]\nname="a"\n[conda]\nchannels=[]\npackages=["python"]\n', "conda.channels", "at least one"),
    ('[stack]\nname="a"\n[module]\nsetenv={X="a\\nb"}\n', "module.setenv.X", "line break"),
    ('[stack]\nname="a"\n[module]\nprepend_path={P=["/a\\nb"]}\n', "module.prepend_path.P[0]", "line break"),
    ("[stack\nname='a'\n", "(toml)", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD)
def test_bad_spec_names_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(text)
    assert e.value.key == key
    assert problem in str(e.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[stack]\nname="conda"\npython="/nonexistent/python3.99"\n', "stack.python"),
        ('[stack]\nname="conda"\npython="3.99"\n', "stack.python"),
        ('[stack]\nname="conda"\n[packages]\nrequirements=["numpy>>1"]\n', "packages.requirements[0]"),
        ('[stack]\nname="conda"\nweird=1\n', "stack.weird"),
    ],
)
def test_cli_bad_spec_exit_2_nothing_written(tmp_path: Path, text: str, needle: str) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    root = tmp_path / "root"
    r = run_cli("build", str(spec), "--root", str(root), "--version", "2022-07-19")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not root.exists(), "a bad spec must write nothing"


@pytest.mark.parametrize("version", ["2022/07/19", "..", "a b", "../x"])
def test_cli_bad_version(tmp_path: Path, version: str) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(f'[stack]\nname="conda"\npython="{sys.executable}"\n')
    root = tmp_path / "root"
    r = run_cli("build", str(spec), "--root", str(root), "--version", version)
    assert r.returncode == 2 and "--version" in r.stderr and "Traceback" not in r.stderr
    assert not root.exists()


def test_missing_spec_file(tmp_path: Path) -> None:
    r = run_cli("build", str(tmp_path / "nope.toml"), "--root", str(tmp_path / "r"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_build_isolation_can_be_turned_off_per_package() -> None:
    spec = parse_spec('[stack]\nname="a"\n[packages.build.Horovod]\nno-binary=true\nbuild-isolation=false\n')
    assert spec.packages.build["horovod"].build_isolation is False
