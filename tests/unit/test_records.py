"""core.records on temp trees: the stack.json schema round trip, lock files, the user base."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sitestack.core.layout import records_dir
from sitestack.core.records import (
    LOCK,
    RETIRED,
    STACK_JSON,
    RetiredRecord,
    StackRecord,
    UserPolicy,
    lock_text,
    read_lock,
    stack_json,
    user_base,
    user_base_rel,
)


def write_stack(prefix: Path, **over: object) -> dict[str, object]:
    doc = stack_json(
        name="py", version="2025.01", site="hpc", description="d", kind="pypi", python="3.11.9",
        python_xy="3.11", prefix=prefix, root=prefix.parents[2], tool_version="0.1", built="2025-01-01T00:00:00",
        packages={"numpy": "2.0.0"}, files=3, bytes_=42, module={"family": "python"},
        extra={"conda_channels": ["c"]}, user=UserPolicy(no_index=True, find_links=("/w",)),
        requested=["numpy"])
    doc.update(over)
    records_dir(prefix).mkdir(parents=True)
    (records_dir(prefix) / STACK_JSON).write_text(json.dumps(doc))
    return doc


def test_stack_json_round_trips_through_stack_record(tmp_path: Path) -> None:
    prefix = tmp_path / "stacks" / "py" / "2025.01"
    write_stack(prefix)
    r = StackRecord.load(prefix)
    assert (r.name, r.version, r.ref, r.site, r.kind) == ("py", "2025.01", "py/2025.01", "hpc", "pypi")
    assert r.prefix == prefix and r.root == tmp_path
    assert r.python_exe == prefix / "bin" / "python3.11"
    assert r.site_packages == prefix / "lib" / "python3.11" / "site-packages"
    assert r.records == prefix / ".sitestack"
    assert r.packages == {"numpy": "2.0.0"} and r.files == 3 and r.bytes == 42
    assert r.user == UserPolicy(no_index=True, find_links=("/w",)) and bool(r.user)
    assert r.requested == ("numpy",)
    assert r.extra == {"conda_channels": ["c"], "sitestack": "0.1"}  # unknown keys kept, not lost


def test_older_stack_json_gets_defaults(tmp_path: Path) -> None:
    prefix = tmp_path / "stacks" / "py" / "1"
    records_dir(prefix).mkdir(parents=True)
    (records_dir(prefix) / STACK_JSON).write_text(json.dumps(
        {"name": "py", "version": "1", "site": "s", "python": "3.11.1", "python_xy": "3.11"}))
    r = StackRecord.load(prefix)
    assert r.root == tmp_path and r.kind == "pypi" and r.packages == {} and r.requested == ()
    assert r.user == UserPolicy() and not r.user


def test_unreadable_stack_json_raises_what_callers_catch(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        StackRecord.load(tmp_path / "missing")
    records_dir(tmp_path).mkdir()
    (records_dir(tmp_path) / STACK_JSON).write_text("{truncated")
    with pytest.raises(ValueError):
        StackRecord.load(tmp_path)
    (records_dir(tmp_path) / STACK_JSON).write_text("{}")
    with pytest.raises(KeyError):
        StackRecord.load(tmp_path)


def test_lock_text_and_read_lock(tmp_path: Path) -> None:
    text = lock_text({"b": "2", "a": "1.0"})
    assert text == "a==1.0\nb==2\n"
    records_dir(tmp_path).mkdir()
    (records_dir(tmp_path) / LOCK).write_text(text + "\n# comment\n  c==3  \n")
    assert read_lock(tmp_path) == {"a": "1.0", "b": "2", "c": "3"}


def test_user_base_is_per_site_name_and_version() -> None:
    assert user_base_rel("hpc", "py", "2025.01") == ".local/hpc/py/2025.01"
    assert user_base("hpc", "py", "2025.01", home="/home/u") == Path("/home/u/.local/hpc/py/2025.01")
    assert user_base("hpc", "py", "1", home="/h") != user_base("hpc", "py", "2", home="/h")


def test_user_policy_json_round_trip() -> None:
    p = UserPolicy(("/w",), "https://idx", ("https://x",), True, ("c.txt",), (":all:",))
    assert UserPolicy.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert UserPolicy.from_json(None) == UserPolicy() and UserPolicy.from_json("junk") == UserPolicy()


def test_retired_record_round_trip(tmp_path: Path) -> None:
    r = RetiredRecord("py", "1", "2025-02-03", "use py/2", tmp_path / "stacks" / "py" / "1", tmp_path,
                      keep_archive=True)
    kept = tmp_path / "py" / "1"  # ROOT/.sitestack/retired/NAME/VERSION: the reader checks both
    kept.mkdir(parents=True)
    r = dataclasses.replace(r, records=kept)
    (kept / RETIRED).write_text(json.dumps(r.to_json()))
    back = RetiredRecord.load(kept)
    assert back == r and back.ref == "py/1"
    assert r.to_json()["retired"] == "2025-02-03"  # the file's key for the date
