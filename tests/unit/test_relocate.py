"""core.relocate on temp trees: prefix rewriting, shebangs, padded binaries, symlinks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sitestack.core.manifest import PrefixHit
from sitestack.core.relocate import (
    MAX_SHEBANG,
    fix_shebang,
    relink,
    relocate,
    relocate_map,
    replace_padded,
    retarget,
    rewrite_file,
)
from sitestack.errors import UsageError


def test_relocate_rewrites_listed_text_files_as_new_inodes(tmp_path: Path) -> None:
    old, new = "/old/prefix", str(tmp_path / "root")
    root = Path(new)
    (root / "bin").mkdir(parents=True)
    script = root / "bin" / "tool"
    script.write_bytes(f"#!{old}/bin/python3.11\nprint('hi')\n".encode())
    os.chmod(script, 0o755)
    pth = root / "x.pth"
    pth.write_text(f"{old}/lib/extra\n")
    twin = tmp_path / "twin"
    os.link(pth, twin)  # a hardlinked clone's file: must not change through the other name
    unlisted = root / "unlisted.txt"
    unlisted.write_text(old)
    r = relocate(root, old, new, [PrefixHit("bin/tool", "text"), PrefixHit("x.pth", "text")])
    assert sorted(r.rewritten) == ["bin/tool", "x.pth"] and r.binaries == ()
    assert script.read_text().startswith(f"#!{new}/bin/python3.11\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert pth.read_text() == f"{new}/lib/extra\n" and twin.read_text() == f"{old}/lib/extra\n"
    assert unlisted.read_text() == old  # only the listed files are read at all
    assert sorted(p.name for p in root.iterdir()) == ["bin", "unlisted.txt", "x.pth"]  # no temps


def test_relocate_map_is_one_pass_longest_first(tmp_path: Path) -> None:
    """X/v -> X/vs/... must not be rewritten again by a shorter old prefix."""
    (tmp_path / "f").write_text("/a/v/lib /a/v2/lib")
    r = relocate_map(tmp_path, {"/a/v": "/a/v2/stage", "/a/v2": "/b"}, [PrefixHit("f", "text")])
    assert r.rewritten == ("f",)
    assert (tmp_path / "f").read_text() == "/a/v2/stage/lib /b/lib"


def test_relocate_reports_binaries_and_pads_conda_ones(tmp_path: Path) -> None:
    old, new = "/opt/placeholder_long_prefix", "/opt/short"
    blob = b"\x7fELF" + old.encode() + b"/lib\0rest"
    (tmp_path / "plain.so").write_bytes(blob)
    (tmp_path / "padded.so").write_bytes(blob)
    hits = [PrefixHit("plain.so", "binary"), PrefixHit("padded.so", "binary")]
    r = relocate(tmp_path, old, new, hits, padded_binaries=["padded.so"])
    assert r.binaries == ("plain.so",) and r.rewritten == ("padded.so",)
    assert (tmp_path / "plain.so").read_bytes() == blob
    out = (tmp_path / "padded.so").read_bytes()
    assert len(out) == len(blob) and out.startswith(b"\x7fELF/opt/short/lib\0") and out.endswith(b"\0rest")


def test_relocate_skips_a_hit_reached_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("/old")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link.txt")
    r = relocate(root, "/old", "/new", [PrefixHit("link.txt", "text")])
    assert r.rewritten == () and outside.read_text() == "/old"


def test_replace_padded_keeps_length_and_refuses_without_room() -> None:
    data = b"A/old/x\0\0\0\0B"
    assert replace_padded(data, b"/old", b"/o") == b"A/o/x\0\0\0\0\0\0B"
    grown = replace_padded(data, b"/old", b"/older")  # into the NUL padding after the string
    assert grown == b"A/older/x\0\0B" and len(grown) == len(data)
    with pytest.raises(UsageError, match="no room"):
        replace_padded(b"/old/x\0B", b"/old", b"/much/longer")


def test_fix_shebang_makes_long_or_spaced_paths_runnable(tmp_path: Path) -> None:
    short = b"#!/usr/bin/python3\nx\n"
    assert fix_shebang(short) == short
    assert fix_shebang(b"#!/usr/bin/env python3\n") == b"#!/usr/bin/env python3\n"
    assert fix_shebang(b"no shebang") == b"no shebang"
    # A real python at a path with a space, and at one longer than the kernel reads.
    spaced = tmp_path / "with space"
    deep = tmp_path / ("d" * (MAX_SHEBANG + 10))
    for i, folder in enumerate((spaced, deep)):
        (folder / "bin").mkdir(parents=True)
        os.symlink(sys.executable, folder / "bin" / "python3")
        body = fix_shebang(f"#!{folder}/bin/python3\nimport sys; print('ran', *sys.argv[1:])\n".encode())
        assert body.startswith(b"#!/bin/sh\n")
        script = tmp_path / f"script{i}"
        script.write_bytes(body)
        os.chmod(script, 0o755)
        out = subprocess.run([str(script), "a b"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout == "ran a b\n", out.stderr


def test_rewrite_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("/stage/bin")
    assert rewrite_file(f, "/stage", "/final") and f.read_text() == "/final/bin"
    assert not rewrite_file(f, "/stage", "/final")  # nothing left to change
    f.write_bytes(b"\0/stage")
    assert not rewrite_file(f, "/stage", "/final", kind="binary") and f.read_bytes() == b"\0/stage"


def test_retarget_and_relink(tmp_path: Path) -> None:
    mapping = {"/old": "/new", "/old/deep": "/elsewhere"}
    assert retarget("/old/x", mapping) == "/new/x"
    assert retarget("/old/deep/y", mapping) == "/elsewhere/y"
    assert retarget("/old", mapping) == "/new"
    assert retarget("/older/x", mapping) is None  # a prefix of the name, not of the path
    assert retarget("relative/x", mapping) is None
    (tmp_path / "d").mkdir()
    os.symlink("/old/lib/libx.so", tmp_path / "d" / "abs")
    os.symlink("../rel", tmp_path / "d" / "rel")
    os.symlink("/unrelated", tmp_path / "other")
    changed = relink(tmp_path, mapping)
    assert changed == ["d/abs"]
    assert os.readlink(tmp_path / "d" / "abs") == "/new/lib/libx.so"
    assert os.readlink(tmp_path / "d" / "rel") == "../rel" and os.readlink(tmp_path / "other") == "/unrelated"
    # From a manifest's list: only those links are looked at.
    os.unlink(tmp_path / "other")
    os.symlink("/old/a", tmp_path / "other")
    assert relink(tmp_path, {"/old": "/x"}, {"d/abs": "/new/lib/libx.so"}) == []
    assert os.readlink(tmp_path / "other") == "/old/a"
