"""[tests.gpu]: run only where a GPU is visible, recorded as skipped elsewhere, never as passed;
`sitestack test NAME/VERSION [--gpu]` reruns a published stack's tests into the site state.

This machine has no GPU, so the real runs here are "skipped". SITESTACK_GPU=1 (the documented
override for sites whose GPUs do not show through nvidia-smi or /dev/nvidia0) proves that the
same tests do run, and fail the build, where a GPU is declared visible.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sitestack.build.smoke import gpu_visible
from sitestack.core.layout import SiteRoot
from tests.conftest import run_cli, spec_text

GPU = '\n[tests.gpu]\nimports = ["shadowme"]\ncommands = ["exit 7"]\n'


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SITESTACK_GPU"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def no_gpu() -> None:
    os.environ.pop("SITESTACK_GPU", None)
    visible, how = gpu_visible()
    if visible:
        pytest.skip(f"this machine has a GPU ({how}): the 'skipped' tests do not apply")


@pytest.fixture(scope="module")
def gpu_root(workdir: Path) -> SiteRoot:
    root = SiteRoot(workdir / "site-gpu")
    root.path.mkdir()
    return root


@pytest.fixture(scope="module")
def gpu_stack(no_gpu: None, gpu_root: SiteRoot, wheelhouse: Path, workdir: Path) -> Path:
    spec = workdir / "gpu.toml"
    spec.write_text(spec_text("gpu", ["shadowme==1.0"], wheelhouse, imports=["shadowme"],
                              commands=["true"], extra=GPU))
    r = run_cli("build", str(spec), "--root", str(gpu_root.path), "--version", "1", env=_env())
    assert r.returncode == 0, r.stderr
    return gpu_root.prefix("gpu", "1")


@pytest.mark.parametrize(("extra", "message"), [
    ('\n[tests]\ngpu = ["torch"]\n', "tests.gpu: must be a table, not list"),
    ('\n[tests.gpu]\nimports = "torch"\n', "tests.gpu.imports: must be a list of strings, not str"),
    ('\n[tests.gpu]\ncommands = [1]\n', "tests.gpu.commands[0]: must be a string, not int"),
    ('\n[tests.gpu]\nimport = ["torch"]\n', "tests.gpu.import: unknown key (allowed: commands, imports)"),
])
def test_bad_gpu_table_is_a_spec_error(extra: str, message: str, workdir: Path, wheelhouse: Path,
                                       tmp_path: Path) -> None:
    text = spec_text("badgpu", ["shadowme==1.0"], wheelhouse)
    if extra.startswith("\n[tests]"):
        text = text.replace("\n[tests]\n", "\n[tests]\n" + extra.split("\n[tests]\n", 1)[1], 1)
    else:
        text += extra
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    root = tmp_path / "root"
    r = run_cli("build", str(spec), "--root", str(root))
    assert r.returncode == 2, r.stderr
    assert f"sitestack: error: {spec}: {message}" in r.stderr and "Traceback" not in r.stderr
    assert not (root / "stacks").exists()


def test_build_records_gpu_tests_as_skipped_without_a_gpu(gpu_stack: Path) -> None:
    tests = json.loads((gpu_stack / ".sitestack" / "tests.json").read_text())
    by = {(t.get("kind", ""), t["test"]): t for t in tests}
    # The GPU command would exit 7: had it run, the build would have failed.
    assert by[("gpu", "exit 7")]["status"] == "skipped" and by[("gpu", "exit 7")]["ok"] is None
    assert by[("gpu", "import shadowme")]["status"] == "skipped"
    assert by[("", "import shadowme")]["status"] == "passed" and by[("", "true")]["ok"] is True
    assert not any(t["status"] == "passed" for t in tests if t.get("kind") == "gpu")
    assert "GPU tests: skipped (no GPU visible" in (gpu_stack / ".sitestack" / "build.log").read_text()


def test_rerun_records_in_the_site_state_not_the_stack(gpu_stack: Path, gpu_root: SiteRoot) -> None:
    before = (gpu_stack / ".sitestack" / "tests.json").read_bytes()
    r = run_cli("test", "gpu/1", "--root", str(gpu_root.path), env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed   import shadowme" in r.stdout and "skipped  gpu exit 7" in r.stdout
    assert "3 passed, 0 failed, 2 skipped" in r.stdout
    rec = json.loads((gpu_root.meta / "tests" / "gpu" / "1.json").read_text())
    assert rec["stack"] == "gpu/1" and rec["gpu"]["visible"] is False and rec["ok"] is True
    assert [t["status"] for t in rec["results"] if t["kind"] == "gpu"] == ["skipped", "skipped"]
    assert (gpu_stack / ".sitestack" / "tests.json").read_bytes() == before


def test_rerun_gpu_only_without_a_gpu_is_not_a_pass(gpu_stack: Path, gpu_root: SiteRoot) -> None:
    r = run_cli("test", "gpu/1", "--gpu", "--json", "--root", str(gpu_root.path), env=_env())
    assert r.returncode == 1, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["passed"] == 0 and data["skipped"] == 2 and data["gpu_only"]
    assert "no GPU is visible" not in r.stderr  # --json: the data says it
    r = run_cli("test", "gpu/1", "--gpu", "--root", str(gpu_root.path), env=_env())
    assert r.returncode == 1 and "no GPU is visible here: the GPU tests were skipped, not passed" in r.stderr


def test_gpu_tests_run_where_a_gpu_is_declared(gpu_stack: Path, gpu_root: SiteRoot) -> None:
    r = run_cli("test", "gpu/1", "--gpu", "--json", "--root", str(gpu_root.path), env=_env(SITESTACK_GPU="1"))
    assert r.returncode == 1, r.stdout + r.stderr
    data = json.loads(r.stdout)
    by = {t["test"]: t for t in data["results"]}
    assert set(by) == {"import shadowme", "exit 7"}  # --gpu: only the GPU tests
    assert by["import shadowme"]["status"] == "passed"
    assert by["exit 7"]["status"] == "failed" and by["exit 7"]["returncode"] == 7
    assert data["gpu"] == {"visible": True, "how": "SITESTACK_GPU=1"}


def test_a_failing_gpu_test_fails_the_build_where_a_gpu_is_visible(gpu_root: SiteRoot, wheelhouse: Path,
                                                                    tmp_path: Path) -> None:
    spec = tmp_path / "gpufail.toml"
    spec.write_text(spec_text("gpufail", ["shadowme==1.0"], wheelhouse, extra=GPU))
    r = run_cli("build", str(spec), "--root", str(gpu_root.path), "--version", "1", env=_env(SITESTACK_GPU="1"))
    assert r.returncode == 4, r.stderr
    assert "smoke test failed: GPU exit 7" in r.stderr and "nothing was published" in r.stderr
    assert not gpu_root.prefix("gpufail", "1").exists()


def test_gpu_only_rerun_needs_gpu_tests(gpu_root: SiteRoot, gpu_stack: Path, wheelhouse: Path,
                                        tmp_path: Path) -> None:
    spec = tmp_path / "plain.toml"
    spec.write_text(spec_text("plain", ["shadowme==1.0"], wheelhouse))
    assert run_cli("build", str(spec), "--root", str(gpu_root.path), "--version", "1").returncode == 0
    r = run_cli("test", "plain/1", "--gpu", "--root", str(gpu_root.path))
    assert r.returncode == 2 and "sitestack: error: plain/1 has no [tests.gpu] tests" in r.stderr
