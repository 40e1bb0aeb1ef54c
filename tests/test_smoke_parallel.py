"""Smoke tests run side by side (build.smoke): for real, in spec order, first failure first.

The concurrency proof: two commands that each write a marker and then wait for the other's.
They can only both pass when they run at the same time, and with SITESTACK_SMOKE_JOBS=1 the
first of them fails, which shows the markers cannot be met one after another.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from sitestack.build.smoke import durations, last_durations, run_smoke_tests, smoke_width
from sitestack.core.layout import SiteRoot
from sitestack.core.log import BuildLog
from sitestack.core.records import StackRecord
from sitestack.errors import SmokeTestError, UsageError
from sitestack.site import spec as specs  # its TestsSpec by name here would be collected by pytest
from sitestack.site.spec import StackSpec, parse_spec
from tests.conftest import run_cli, spec_text


def _spec(wheelhouse: Path, commands: list[str], *, imports: tuple[str, ...] = (), timeout: float = 120) -> StackSpec:
    spec = parse_spec(spec_text("par", ["tinyapp"], wheelhouse))
    return replace(spec, tests=specs.TestsSpec(imports=imports, commands=tuple(commands), timeout=timeout))


def _meet(me: str, other: str, d: Path, tries: int) -> str:
    """Write my marker, then wait (0.1 s a try) for the other's: exit 1 if it never comes."""
    return (f"touch {d}/{me}; for i in $(seq {tries}); do [ -e {d}/{other} ] && exit 0; sleep 0.1; done; "
            f"echo {me} never saw {other}; exit 1")


def _run(spec: StackSpec, stack: StackRecord, *, stop_on_failure: bool = True,
         ) -> tuple[list[dict[str, object]], BuildLog]:
    log = BuildLog(echo=False)
    return run_smoke_tests(spec, stack.prefix, stack.python_xy, log, stop_on_failure=stop_on_failure), log


def test_two_tests_that_wait_for_each_other_pass_side_by_side(
        stack: StackRecord, wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITESTACK_SMOKE_JOBS", "2")  # even on a one-CPU runner
    a, b = _meet("a", "b", tmp_path, 300), _meet("b", "a", tmp_path, 300)
    results, log = _run(_spec(wheelhouse, [a, b]), stack)
    assert [(r["test"], r["status"]) for r in results] == [("import pip", "passed"), (a, "passed"), (b, "passed")]
    assert "3 smoke test(s) passed (3 process(es), 2 at a time" in log.text()


def test_the_same_two_tests_cannot_pass_one_after_another(
        stack: StackRecord, wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITESTACK_SMOKE_JOBS", "1")
    a, b = _meet("a", "b", tmp_path, 10), _meet("b", "a", tmp_path, 10)
    results, _log = _run(_spec(wheelhouse, [a, b]), stack, stop_on_failure=False)
    assert [r["status"] for r in results] == ["passed", "failed", "passed"]
    assert "a never saw b" in str(results[1]["output"])


def test_the_first_failure_in_spec_order_is_reported_and_later_tests_are_cancelled(
        stack: StackRecord, wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITESTACK_SMOKE_JOBS", "4")
    # The later test fails first in time; the earlier one fails a second later and is the one
    # reported, as it would be one after another. The last one is killed, not waited for.
    earlier = "sleep 1; echo earlier-output; exit 3"
    later = "echo later-output; exit 5"
    hang = f"touch {tmp_path}/started; sleep 600"
    t0 = time.monotonic()
    with pytest.raises(SmokeTestError) as e:
        _run(_spec(wheelhouse, [earlier, later, hang]), stack)
    assert time.monotonic() - t0 < 60
    msg = str(e.value)
    assert msg.startswith(f"smoke test failed: {earlier}\n") and "exit code 3" in msg and "earlier-output" in msg
    assert "later-output" not in msg and "nothing was published" in msg


def test_results_are_the_same_side_by_side_as_one_after_another(
        stack: StackRecord, wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cmds = ["echo one", "sleep 0.5; echo two >&2; exit 4", "echo three; pwd > here", "python -c 'import tinyapp'"]
    spec = _spec(wheelhouse, cmds, imports=("shadowme", "no_such_module_xyz", "tinyapp"))
    runs = []
    for jobs in ("1", "4"):
        monkeypatch.setenv("SITESTACK_SMOKE_JOBS", jobs)
        results, _log = _run(spec, stack, stop_on_failure=False)
        runs.append([{k: v for k, v in r.items() if k != "seconds"} for r in results])
        assert all(list(r) == ["test", "kind", "ok", "status", "output", "seconds", *(["returncode"] if "returncode" in r else [])]
                   for r in results)
    assert runs[0] == runs[1]
    assert [r["status"] for r in runs[0]] == ["passed", "passed", "failed", "passed",
                                              "passed", "failed", "passed", "passed"]


def test_a_timeout_kills_what_the_command_started(stack: StackRecord, wheelhouse: Path) -> None:
    # bash runs `sleep` as a child here (not the last command): killing bash alone would leave
    # it holding the output pipe for 120 s.
    t0 = time.monotonic()
    results, _log = _run(_spec(wheelhouse, ["sleep 120; true"], timeout=1), stack, stop_on_failure=False)
    assert time.monotonic() - t0 < 30
    assert results[-1]["status"] == "failed" and results[-1]["returncode"] == 124
    assert "timed out after 1s" in str(results[-1]["output"])


def test_plain_tests_run_one_at_a_time_where_a_gpu_is_visible(
        stack: StackRecord, wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No [tests.gpu], but a GPU node (SITESTACK_GPU=1, the documented override): the two
    tests that need each other at once now fail, as they do one after another."""
    monkeypatch.delenv("SITESTACK_SMOKE_JOBS", raising=False)
    monkeypatch.setenv("SITESTACK_GPU", "1")
    a, b = _meet("a", "b", tmp_path, 10), _meet("b", "a", tmp_path, 10)
    results, log = _run(_spec(wheelhouse, [a, b]), stack, stop_on_failure=False)
    assert [r["status"] for r in results] == ["passed", "failed", "passed"]
    assert "a GPU is visible (SITESTACK_GPU=1): smoke tests run one at a time" in log.text()
    assert "(3 process(es), 1 at a time" in log.text()
    monkeypatch.setenv("SITESTACK_GPU", "0")
    _results, log = _run(_spec(wheelhouse, ["true", "true"]), stack)
    assert "one at a time" not in log.text()


def test_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITESTACK_SMOKE_JOBS", raising=False)
    assert smoke_width(100) >= 1 and smoke_width(3) <= 3 and smoke_width(0) == 1
    assert smoke_width(8, one_device=True) == 1
    monkeypatch.setenv("SITESTACK_SMOKE_JOBS", "3")
    assert smoke_width(8) == 3 and smoke_width(8, one_device=True) == 3 and smoke_width(2) == 2
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("SITESTACK_SMOKE_JOBS", bad)
        with pytest.raises(UsageError, match="SITESTACK_SMOKE_JOBS"):
            smoke_width(4)


def test_a_build_reports_the_earlier_of_two_failures_and_publishes_nothing(
        site_root: SiteRoot, wheelhouse: Path, tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text("twofail", ["tinyapp"], wheelhouse,
                              commands=["sleep 1; echo first-failure; exit 3", "echo second-failure; exit 5"]))
    r = run_cli("build", str(spec), "--root", str(site_root.path), "--version", "1")
    assert r.returncode == 4, r.stderr
    assert "smoke test failed: sleep 1; echo first-failure; exit 3" in r.stderr and "first-failure" in r.stderr
    assert "second-failure" not in r.stderr
    assert not (site_root.stacks / "twofail" / "1").exists()


def test_the_slowest_tests_by_an_earlier_run_start_first(
        stack: StackRecord, wheelhouse: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One at a time, the start order is visible: a test no earlier run knows first, then the
    slowest known; the results keep the spec's order."""
    monkeypatch.setenv("SITESTACK_SMOKE_JOBS", "1")
    cmds = [f"echo {c} >> {tmp_path}/order" for c in "abcd"]
    expected = {"import pip": 0.1, cmds[0]: 1.0, cmds[1]: 3.0, cmds[2]: 2.0}  # d: never ran
    log = BuildLog(echo=False)
    results = run_smoke_tests(_spec(wheelhouse, cmds), stack.prefix, stack.python_xy, log, expected=expected)
    assert (tmp_path / "order").read_text().split() == ["d", "b", "c", "a"]
    assert [r["test"] for r in results] == ["import pip", *cmds]
    assert "started the slowest first (by an earlier run's times): echo d" in log.text()
    # The stack's own record gives the times of its tests; a build of the name starts from the
    # newest published version's (by its stack.json's time). The session's site holds other
    # versions of this name, built by other tests: two versions in a site of their own here.
    assert set(durations(stack.records)) == {"import pip", "import shadowme", "import tinyapp"}
    site = SiteRoot(tmp_path / "site")
    now = time.time()
    for version, age, tests in (("old", 100, [{"test": "import pip", "kind": "", "status": "passed", "seconds": 9.0}]),
                                ("new", 10, None)):
        rec = site.prefix(stack.name, version) / stack.records.name
        rec.mkdir(parents=True)
        (rec / "stack.json").write_bytes((stack.records / "stack.json").read_bytes())
        if tests is None:
            (rec / "tests.json").write_bytes((stack.records / "tests.json").read_bytes())
        else:
            (rec / "tests.json").write_text(json.dumps(tests))
        os.utime(rec / "stack.json", (now - age, now - age))
    assert last_durations(site, stack.name) == durations(stack.records)
    os.utime(site.prefix(stack.name, "old") / stack.records.name / "stack.json", (now, now))
    assert last_durations(site, stack.name) == {"import pip": 9.0}
    assert last_durations(site, "other") == {}


def test_durations_keep_only_what_has_their_shape(tmp_path: Path) -> None:
    assert durations(tmp_path) == {}
    (tmp_path / "tests.json").write_text("{not json")
    assert durations(tmp_path) == {}
    (tmp_path / "tests.json").write_text(json.dumps([
        {"test": "import a", "status": "passed", "seconds": 2}, {"test": "b", "status": "failed", "seconds": 1.5},
        {"test": "gpu", "status": "skipped", "seconds": 0.0}, {"test": 3, "status": "passed", "seconds": 1},
        {"test": "c", "status": "passed", "seconds": "1"}, "junk", None]))
    assert durations(tmp_path) == {"import a": 2.0, "b": 1.5}
    (tmp_path / "tests.json").write_text(json.dumps({"test": "a"}))
    assert durations(tmp_path) == {}
