"""build/cachelink (pkgcache.link, prepare): site-cache entries hardlinked into a prefix by
several threads, with the result one thread gives: the later entry's file where two ship one,
rewritten copies of the prefix-naming files, symlinks as they are, the entries' recorded
hashes for what was linked; and the same with a guess at the entries planned ahead."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from sitestack.build import pkgcache
from sitestack.build.cacheentry import ENTRY, FILES, load_entry
from sitestack.core.manifest import FileEntry, Manifest

OLD = "/old/prefix/of/the/fill"


def _entry(base: Path, name: str, files: dict[str, bytes], *, links: dict[str, str] | None = None,
           rewrite: tuple[str, ...] = ()) -> pkgcache.Entry:
    """A cache entry as cachefill leaves it: tree/, entry.json, files.json (read-only modes)."""
    tree = base / name / "tree"
    m = Manifest(files={})
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
        os.chmod(tree / rel, 0o555 if rel.startswith("bin/") else 0o444)
        m.files[rel] = FileEntry(hashlib.sha256(data).hexdigest(), len(data), 0o444)
    for rel, target in (links or {}).items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, tree / rel)
    m.save(base / name / FILES)
    (base / name / ENTRY).write_text(json.dumps({"pin": f"{name}==1", "rewrite": list(rewrite), "old": [OLD]}))
    return load_entry(base / name)


def _tree(root: Path) -> dict[str, tuple[str, object]]:
    out: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", None)
            else:  # a copy's inode is its own, and it names its own prefix
                st = p.stat()
                out[rel] = ("file", (p.read_bytes().replace(str(root).encode(), b"PREFIX"),
                                     st.st_ino if st.st_nlink > 1 else None))
    return out


@pytest.fixture()
def entries(tmp_path: Path) -> list[pkgcache.Entry]:
    cache = tmp_path / "cache"
    # Enough files for several thread tasks (LINK_BATCH each), in folders several levels deep.
    many = {f"lib/site-packages/big/m{i // 50}/f{i}.py": f"x = {i}\n".encode() for i in range(700)}
    return [
        _entry(cache, "a", {**many, "lib/site-packages/shared.txt": b"from a", "bin/tool": f"#!{OLD}/bin/python\n".encode(),
                            "lib/site-packages/a.py": b"a = 1\n", "lib/old.txt": b"a's"},
               links={"lib/site-packages/alias.py": "a.py"}, rewrite=("bin/tool",)),
        _entry(cache, "b", {"lib/site-packages/shared.txt": b"from b", "lib/site-packages/b/__init__.py": b"",
                            "lib/interp.txt": b"b's, over the interpreter's"}),
        # c ships a file where a had a symlink, and a symlink where a had a file
        _entry(cache, "c", {"lib/site-packages/alias.py": b"c's file"}, links={"lib/old.txt": "interp.txt"}),
    ]


def test_several_threads_link_what_one_thread_links(tmp_path: Path, entries: list[pkgcache.Entry]) -> None:
    results, trees = [], []
    for jobs in (1, 4):
        prefix = tmp_path / f"prefix{jobs}"
        (prefix / "lib").mkdir(parents=True)
        (prefix / "lib" / "interp.txt").write_text("the interpreter's copy")
        results.append(pkgcache.link(entries, prefix, jobs=jobs))
        trees.append(_tree(prefix))
    assert trees[0] == trees[1]
    assert [(r.linked, r.copied, r.known, r.rewritten_py) for r in results[:1]] == \
        [(r.linked, r.copied, r.known, r.rewritten_py) for r in results[1:]]
    res, prefix = results[1], tmp_path / "prefix4"
    shared = prefix / "lib/site-packages/shared.txt"
    assert shared.read_bytes() == b"from b"
    assert shared.stat().st_ino == (entries[1].tree / "lib/site-packages/shared.txt").stat().st_ino
    assert res.known["lib/site-packages/shared.txt"].sha256 == hashlib.sha256(b"from b").hexdigest()
    assert (prefix / "lib/interp.txt").read_bytes() == b"b's, over the interpreter's"
    assert (prefix / "lib/site-packages/alias.py").read_bytes() == b"c's file"
    assert os.readlink(prefix / "lib/old.txt") == "interp.txt" and "lib/old.txt" not in res.known
    assert (prefix / "lib/site-packages/big/m13/f699.py").stat().st_ino == \
        (entries[0].tree / "lib/site-packages/big/m13/f699.py").stat().st_ino
    tool = prefix / "bin/tool"
    assert tool.read_text() == f"#!{prefix}/bin/python\n" and "bin/tool" not in res.known
    assert tool.stat().st_ino != (entries[0].tree / "bin/tool").stat().st_ino and tool.stat().st_mode & 0o200
    # every regular file but the rewritten script is a link with its entry's recorded hash
    files = {rel for rel, (kind, _v) in trees[1].items() if kind == "file"}
    assert set(res.known) == files - {"bin/tool"} and res.linked == len(files) - 1 and res.copied == 1
    assert not res.rewritten_py


def test_a_failed_link_stops_and_raises(tmp_path: Path, entries: list[pkgcache.Entry]) -> None:
    """A file where an entry has a folder (this thread's mkdir fails), a folder where an entry
    has a file (a linking thread fails): either error reaches the caller."""
    prefix = tmp_path / "prefix"
    (prefix / "lib" / "site-packages").mkdir(parents=True)
    (prefix / "lib" / "site-packages" / "big").write_text("a file where a folder goes")
    with pytest.raises(NotADirectoryError):
        pkgcache.link(entries, prefix, jobs=2)
    prefix = tmp_path / "prefix2"
    (prefix / "lib" / "site-packages" / "a.py").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        pkgcache.link(entries, prefix, jobs=2)


def test_a_guess_planned_ahead_gives_the_same_tree_right_or_wrong(tmp_path: Path,
                                                                  entries: list[pkgcache.Entry]) -> None:
    """prepare() plans a guess at the entries and makes its folders while the resolve runs;
    link() then only links when it was right, and when it was wrong links what it is given
    and removes the folders only the guess needed."""
    extra = _entry(tmp_path / "cache", "d", {"share/d/deep/er/file.txt": b"only in the guess"})
    want = [entries[0], entries[2]]
    plain = tmp_path / "plain"
    plain.mkdir()
    expected = pkgcache.link(want, plain, jobs=2)
    for name, guess in (("right", want), ("wrong", [*entries, extra])):
        prefix = tmp_path / name
        prefix.mkdir()
        ready = pkgcache.prepare(guess, prefix, lambda: None, jobs=2)
        assert (prefix / "lib" / "site-packages" / "big" / "m3").is_dir()  # made ahead
        res = pkgcache.link(want, prefix, jobs=2, ready=ready)
        assert _tree(prefix) == _tree(plain), name
        assert (res.linked, res.copied, res.known) == (expected.linked, expected.copied, expected.known)
    assert not (tmp_path / "wrong" / "share").exists()
