"""Tests that need PyPI: run with `python3 -m pytest -m network` (CI runs them as a separate step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sitestack.core.layout import SiteRoot
from sitestack.site.registry import Site
from tests.conftest import REPO, run_cli
from tests.helpers.modules import run_module_script

pytestmark = pytest.mark.network


def test_example_spec_builds_from_pypi_and_loads(workdir: Path) -> None:
    root = SiteRoot(workdir / "site-network")
    r = run_cli("build", str(REPO / "examples" / "conda.toml"), "--root", str(root.path),
                "--version", "2022-07-19", "--default", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert "numpy" in res["packages"] and res["default"] is True
    rec = Site(root).get("conda")
    out = run_module_script("lmod", f'module use "{root.lmod_dir}"\nmodule load conda\n'
                            'python -c "import numpy, sys; print(numpy.ones(3).sum(), sys.prefix)"')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3.0", str(rec.prefix)]
