"""The Jupyter side of the kernel tests: a server venv that is never a stack's
(scripts/install-test-deps.sh makes it), and a stack built with ipykernel's real wheels.

`probe(kernel, codes, env)` starts a kernel with real jupyter_client in that venv
(tests/helpers/kernel_probe.py), runs each code cell and returns what came back.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
WHEELS = Path(os.environ.get("SITESTACK_TEST_WHEELS", "/opt/sitestack-test/wheels"))
SERVER = Path(os.environ.get("SITESTACK_TEST_JUPYTER", "/opt/sitestack-test/jupyter"))
CHP = Path(os.environ.get("SITESTACK_TEST_CHP", "/opt/sitestack-test/chp")) / "node_modules" / ".bin" / "configurable-http-proxy"
SERVER_PY = SERVER / "bin" / "python"
SETTING = "two words, a $dollar and 'quotes'"  # the spec's setenv value the kernels must carry


def require() -> None:
    if not (WHEELS / ".stamp").is_file() or not SERVER_PY.is_file():
        pytest.skip("Jupyter test dependencies missing: run scripts/install-test-deps.sh")


def spec(name: str, wheelhouse: Path, extra: str = "") -> str:
    import sys

    return (f'[stack]\nname = "{name}"\npython = "{sys.executable}"\nsite = "testsite"\n\n'
            f'[packages]\nrequirements = ["ipykernel", "shadowme==1.0"]\n'
            f'find-links = ["{wheelhouse}", "{WHEELS}"]\nno-index = true\n\n'
            f'[module]\nsetenv = {{ JK_SETTING = {json.dumps(SETTING)} }}\n'
            f'prepend_path = {{ JK_PATH = "/opt/jk/{name}" }}\n{extra}')


def probe(kernel: str, codes: list[str], env: dict[str, str], *, interrupt: bool = False,
          restart: bool = False, timeout: float = 180) -> dict[str, Any]:
    argv = [str(SERVER_PY), str(HERE / "kernel_probe.py"), kernel, json.dumps(codes)]
    argv += ["--interrupt"] * interrupt + ["--restart"] * restart
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"probe of {kernel} failed:\n{r.stdout}\n{r.stderr}"
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    out["stderr"] = r.stderr
    return out


# What each test kernel reports about itself: compared with a shell after `module load`.
REPORT = ("import os, sys, json; print(json.dumps({'prefix': sys.prefix, "
          "'userbase': os.environ.get('PYTHONUSERBASE'), 'path0': os.environ['PATH'].split(':')[0], "
          "'setting': os.environ.get('JK_SETTING'), 'jk_path': os.environ.get('JK_PATH'), "
          "'pythonpath': os.environ.get('PYTHONPATH'), 'virtual_env': os.environ.get('VIRTUAL_ENV'), "
          "'stack': os.environ.get('SITESTACK_STACK'), 'clone': os.environ.get('SITESTACK_CLONE'), "
          "'jupyter_path': os.environ.get('JUPYTER_PATH'), 'pid': os.getpid()}))")


def report(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return data
