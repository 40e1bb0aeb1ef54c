"""[packages.build.NAME] build-isolation = false: a build that imports a package of the stack.

horovod's setup.py (through CMake) imports torch to find its headers; under uv's build
isolation torch is absent. The sdist here is a real one with an in-tree PEP 517 backend that
imports `shadowme` (a wheel of the stack, in no build env) and compiles the version it finds
into the wheel, so the test sees which package the build imported, not what a log says.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sitestack.build.stack import BuildLog, build
from sitestack.core.layout import SiteRoot
from sitestack.core.records import StackRecord
from sitestack.errors import BuildError
from sitestack.site.registry import Site
from sitestack.site.spec import parse_spec
from tests.conftest import spec_text
from tests.helpers.wheels import make_sdist

BACKEND = r'''
"""A PEP 517 backend that imports shadowme at build time, as horovod's imports torch."""
import base64, hashlib, os, zipfile

import shadowme  # ModuleNotFoundError in an isolated build env

NAME, VERSION = "needsstack", "1.0"
META = f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"


def _hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    di = f"{NAME}-{VERSION}.dist-info"
    wheel = "Wheel-Version: 1.0\nGenerator: test-backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {f"{NAME}.py": f"BUILT_WITH = {shadowme.__version__!r}\n".encode(),
             f"{di}/METADATA": META.encode(), f"{di}/WHEEL": wheel.encode()}
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        record = []
        for path, content in files.items():
            z.writestr(path, content)
            record.append(f"{path},{_hash(content)},{len(content)}")
        record.append(f"{di}/RECORD,,")
        z.writestr(f"{di}/RECORD", "\n".join(record) + "\n")
    return name
'''


@pytest.fixture(scope="module")
def sdists(workdir: Path) -> Path:
    d = workdir / "sdists-noiso"
    d.mkdir()
    files = {
        "pyproject.toml": ('[build-system]\nrequires = []\nbuild-backend = "stack_backend"\nbackend-path = ["."]\n\n'
                           '[project]\nname = "needsstack"\nversion = "1.0"\n'),
        "PKG-INFO": "Metadata-Version: 2.1\nName: needsstack\nVersion: 1.0\n",
        "stack_backend.py": BACKEND,
    }
    make_sdist(d, "needsstack", "1.0", files)
    return d


@pytest.fixture(scope="module")
def noiso_root(workdir: Path) -> SiteRoot:
    root = SiteRoot(workdir / "site-noiso")
    root.path.mkdir()
    return root


def _spec(wheelhouse: Path, sdists: Path, shadowme: str, table: str) -> str:
    text = spec_text("ni", ["needsstack", f"shadowme=={shadowme}", "tinyapp"], wheelhouse, imports=["needsstack"],
                     extra=f"\n[packages.build.needsstack]\nno-binary = true\n{table}")
    return text.replace(f'find-links = ["{wheelhouse}"]', f'find-links = ["{wheelhouse}", "{sdists}"]')


def _build(root: SiteRoot, text: str, version: str) -> StackRecord:
    build(parse_spec(text), root, version=version, log=BuildLog(echo=False))
    return Site(root).get(f"ni/{version}")


def _built_with(rec: StackRecord) -> str:
    r = subprocess.run([str(rec.python_exe), "-c", "import needsstack; print(needsstack.BUILT_WITH)"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_isolated_build_cannot_import_the_stack(noiso_root: SiteRoot, wheelhouse: Path, sdists: Path) -> None:
    with pytest.raises(BuildError) as e:
        _build(noiso_root, _spec(wheelhouse, sdists, "2.0", ""), "iso")
    assert "needsstack" in str(e.value) and "No module named 'shadowme'" in str(e.value)
    assert not (noiso_root.stacks / "ni" / "iso").exists()


def test_build_without_isolation_imports_the_stacks_own_package(noiso_root: SiteRoot, wheelhouse: Path,
                                                                 sdists: Path) -> None:
    table = "build-isolation = false\n"
    first = _build(noiso_root, _spec(wheelhouse, sdists, "2.0", table), "1")
    assert _built_with(first) == "2.0"
    assert "--no-build-isolation-package needsstack" in (first.records / "build.log").read_text()
    # The same set again: the build is linked from the site cache, not run again.
    again = _build(noiso_root, _spec(wheelhouse, sdists, "2.0", table), "2")
    assert "building needsstack" not in (again.records / "build.log").read_text()
    entries = sorted(p for p in (noiso_root.meta / "pypi").iterdir() if p.name.startswith("needsstack-1.0-src-"))
    assert len(entries) == 1 and json.loads((entries[0] / "entry.json").read_text())["options"]
    # Another version of what it was built against is another build, with that version inside.
    other = _build(noiso_root, _spec(wheelhouse, sdists, "1.0", table), "3")
    assert _built_with(other) == "1.0" and _built_with(first) == "2.0"
    assert len([p for p in (noiso_root.meta / "pypi").iterdir() if p.name.startswith("needsstack-1.0-src-")]) == 2
