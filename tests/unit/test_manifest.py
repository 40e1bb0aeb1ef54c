"""core.manifest on small temp trees: scan, prefix hits, verify, refresh, round trips."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from sitestack.core.manifest import (
    CHUNK,
    Manifest,
    PrefixHit,
    load_prefix_files,
    refresh,
    save_prefix_files,
    scan,
    verify,
)

PREFIX = "/opt/site/stacks/demo/1"


def tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / ".sitestack").mkdir()
    (root / "bin" / "tool").write_text(f"#!{PREFIX}/bin/python\nprint(1)\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "lib" / "pkg" / "__init__.py").write_text("X = 1\n")
    (root / "lib" / "libdemo.so").write_bytes(b"\x7fELF\0\0" + PREFIX.encode() + b"\0tail")
    (root / "lib" / "pkg" / "mod.cpython-311.pyc").write_bytes(b"\0\0" + PREFIX.encode())
    (root / ".sitestack" / "stack.json").write_text("{}")
    os.symlink("tool", root / "bin" / "alias")
    os.symlink("pkg", root / "lib" / "pkglink")
    return root


def test_scan_records_files_links_dirs_and_skips_records(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    m, _hits = scan(root, [PREFIX])
    assert set(m.files) == {"bin/tool", "lib/pkg/__init__.py", "lib/libdemo.so", "lib/pkg/mod.cpython-311.pyc"}
    assert m.symlinks == {"bin/alias": "tool", "lib/pkglink": "pkg"}  # a link to a folder is a link
    assert sorted(m.dirs) == ["bin", "lib", "lib/pkg"]
    assert m.files["bin/tool"].mode == 0o755
    assert m.files["lib/pkg/__init__.py"].size == 6
    assert m.total_bytes == sum(os.path.getsize(root / p) for p in m.files)


def test_prefix_hits_tell_text_from_binary_and_ignore_bytecode(tmp_path: Path) -> None:
    _m, hits = scan(tree(tmp_path / "t"), [PREFIX])
    assert sorted(hits, key=lambda h: h.path) == [PrefixHit("bin/tool", "text"),
                                                  PrefixHit("lib/libdemo.so", "binary")]


def test_prefix_split_across_read_chunks_is_found(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    data = b"a" * (CHUNK - 5) + PREFIX.encode() + b"\n"  # the prefix straddles the 1 MiB boundary
    (root / "big.txt").write_bytes(data)
    _m, hits = scan(root, [PREFIX])
    assert hits == [PrefixHit("big.txt", "text")]


def test_json_and_file_round_trip(tmp_path: Path) -> None:
    m, hits = scan(tree(tmp_path / "t"), [PREFIX])
    assert Manifest.from_json(m.to_json()) == Manifest(dict(sorted(m.files.items())), m.symlinks, sorted(m.dirs))
    m.save(tmp_path / "manifest.json")
    assert Manifest.load(tmp_path / "manifest.json").files == m.files
    save_prefix_files(tmp_path / "prefix-files.json", PREFIX, hits)
    assert load_prefix_files(tmp_path / "prefix-files.json") == (PREFIX, hits)


def test_verify_names_each_kind_of_change(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    m, _ = scan(root)
    assert verify(root, m, check_mode=True) == []
    (root / "lib" / "pkg" / "__init__.py").write_text("X = 2\n")  # same size, other bytes
    (root / "lib" / "libdemo.so").unlink()
    (root / "lib" / "stray.txt").write_text("new")
    os.remove(root / "bin" / "alias")
    os.symlink("elsewhere", root / "bin" / "alias")
    os.chmod(root / "bin" / "tool", 0o644)
    (root / ".sitestack" / "stack.json").write_text("changed")  # records are not part of it
    got = {(x.path, x.problem) for x in verify(root, m, check_mode=True)}
    assert got == {("lib/pkg/__init__.py", "changed"), ("lib/libdemo.so", "missing"),
                   ("lib/stray.txt", "extra"), ("bin/alias", "link changed"),
                   ("bin/tool", "mode changed")}
    assert ("bin/tool", "mode changed") not in {(x.path, x.problem) for x in verify(root, m)}


def test_verify_skip_and_no_extra(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    m, _ = scan(root)
    (root / "bin" / "tool").write_text("#!/elsewhere/bin/python\n")  # relocated on purpose
    (root / "new.txt").write_text("x")
    assert verify(root, m, skip=["bin/tool"], check_extra=False) == []


def test_refresh_equals_a_fresh_scan(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    m, _ = scan(root, [PREFIX])
    since = time.time_ns()
    (root / "lib" / "pkg" / "__init__.py").write_text(f"WHERE = '{PREFIX}'\n")
    (root / "lib" / "pkg" / "extra.py").write_text("pass\n")
    (root / "lib" / "libdemo.so").unlink()
    os.symlink("pkg/extra.py", root / "lib" / "extralink")
    hits = refresh(root, m, since, [PREFIX])
    fresh, _ = scan(root, [PREFIX])
    assert m.files == fresh.files and m.symlinks == fresh.symlinks and sorted(m.dirs) == sorted(fresh.dirs)
    assert hits == [PrefixHit("lib/pkg/__init__.py", "text")]  # only files read again


def test_scan_refuses_a_fifo_at_once_instead_of_hanging(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    os.mkfifo(root / "lib" / "pkg" / "pipe.py")  # nobody writes to it: a plain open would block
    t0 = time.monotonic()
    try:
        scan(root, [PREFIX])
    except OSError as e:
        assert "not a regular file" in str(e) and "pipe.py" in str(e)
    else:
        raise AssertionError("a FIFO was hashed as a file")
    assert time.monotonic() - t0 < 5


def test_hashing_never_follows_a_file_swapped_for_a_symlink(tmp_path: Path) -> None:
    from sitestack.core.manifest import hash_files

    root = tree(tmp_path / "t")
    secret = tmp_path / "secret"
    secret.write_text("not part of the tree\n")
    # As if swapped between the walk and the read: the list still names a file there.
    (root / "lib" / "pkg" / "__init__.py").unlink()
    os.symlink(secret, root / "lib" / "pkg" / "__init__.py")
    try:
        list(hash_files(root, ["lib/pkg/__init__.py"]))
    except OSError as e:
        assert e.errno == errno.ELOOP
    else:
        raise AssertionError("the symlink was followed")


def test_small_and_chunked_files_hash_as_hashlib_does(tmp_path: Path) -> None:
    import hashlib

    from sitestack.core.manifest import hash_files

    root = tmp_path / "t"
    root.mkdir()
    blobs = {"empty": b"", "one": b"x", "small": os.urandom(5000), "exact": os.urandom(CHUNK),
             "more": os.urandom(CHUNK * 2 + 17)}
    for name, data in blobs.items():
        (root / name).write_bytes(data)
    got = dict(hash_files(root, sorted(blobs)))
    for name, data in blobs.items():
        assert got[name][:2] == (hashlib.sha256(data).hexdigest(), len(data)), name


def test_canonical_json_is_json_dumps_sorted_byte_for_byte() -> None:
    """build writes it, pack hashes and packs it: one form, whatever the names hold."""
    import json

    from sitestack.core.manifest import FileEntry, Manifest

    odd = ["plain.py", "sp ace/é.py", 'quo"te\\back', "tab\tnl\n", "\udcff-undecodable", "ü/ß", "~", "a/b/c"]
    for m in (Manifest(files={}),
              Manifest(files={n: FileEntry("ab" * 32, i * 1000, 0o644 | i) for i, n in enumerate(odd)},
                       symlinks={f"l{n}": f"/t/{n}" for n in odd}, dirs=[*odd[::-1], "z"])):
        assert m.canonical_json() == json.dumps(m.to_json(), sort_keys=True).encode()
