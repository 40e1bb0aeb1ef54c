"""sitestack pack: archive contents, formats, and the safety checks of unpacking."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from sitestack.core.manifest import Manifest
from sitestack.core.records import StackRecord
from sitestack.errors import VerifyError
from sitestack.scale.image import read_header
from sitestack.scale.pack import META, content_hash
from sitestack.scale.unpack import unpack_tar
from tests.conftest import run_cli
from tests.helpers.archives import craft, write_archive
from tests.helpers.archives import manifest_entry as _entry
from tests.helpers.archives import tar_file as _file
from tests.helpers.env import offline_env as clean_env  # noqa: F401  (tests/test_security.py imports it from here)


def _members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with open(archive, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z, \
            tarfile.open(fileobj=z, mode="r|") as tf:
        return {m.name: m for m in tf}


def test_pack_stack_carries_header_manifest_and_prefix_list(stack: StackRecord, stack_archive: Path) -> None:
    fmt, header = read_header(stack_archive)
    assert fmt == "tar.zst"
    assert (header.name, header.version, header.kind) == (stack.name, stack.version, "stack")
    assert header.prefixes == {"stack": str(stack.prefix)}
    assert header.python_xy == stack.python_xy and len(header.content_hash) == 64
    names = _members(stack_archive)
    assert list(names)[0] == f"{META}/header.json"  # first: readable without the rest
    assert f"{META}/stack/manifest.json" in names and f"{META}/stack/prefix-files.json" in names
    manifest = Manifest.load(stack.records / "manifest.json")
    assert header.files == len(manifest.files)
    assert {f"stack/{p}" for p in manifest.files} <= set(names)
    assert not any(n.startswith("stack/.sitestack/") for n in names)
    exe = names[f"stack/bin/python{stack.python_xy}"]
    assert exe.mode & 0o111 and abs(exe.mtime - os.lstat(stack.python_exe).st_mtime) < 1e-3


def test_unpack_tar_matches_source(stack: StackRecord, stack_archive: Path, tmp_path: Path) -> None:
    with open(stack_archive, "rb") as f:
        u = unpack_tar(f, tmp_path)  # type: ignore[arg-type]
    rel = f"lib/python{stack.python_xy}/site-packages/shadowme/__init__.py"
    assert (tmp_path / "stack" / rel).read_bytes() == (stack.prefix / rel).read_bytes()
    assert os.readlink(tmp_path / "stack/bin/python3") == os.readlink(stack.prefix / "bin/python3")
    assert any(h.path.endswith("bin/tinyapp") for h in u.hits["stack"])


def test_pack_layer_packs_its_stack_too(stack: StackRecord, packed_layer: Path, site_root, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "layer.tar.zst"
    r = run_cli("pack", str(packed_layer), "-o", str(out), "--json", "--root", str(site_root.path), check=True)
    data = json.loads(r.stdout)
    assert data["kind"] == "layer" and data["format"] == "tar.zst"
    assert data["prefixes"] == {"stack": str(stack.prefix), "layer": str(packed_layer)}
    names = _members(out)
    assert "layer/pyvenv.cfg" in names and f"stack/bin/python{stack.python_xy}" in names
    link = names["layer/bin/python"]
    assert link.issym()
    assert any(n.startswith("layer/lib/python") and n.endswith("layerpkg/__init__.py") for n in names)


def test_pack_clone_path_is_hashed_at_pack_time(stack: StackRecord, site_root, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clone = tmp_path / "clone"
    shutil.copytree(stack.prefix, clone, symlinks=True, ignore=shutil.ignore_patterns(".sitestack"))
    os.chmod(clone, 0o755)
    (clone / "lib" / f"python{stack.python_xy}" / "site-packages" / "added.py").write_text("x = 1\n")
    out = tmp_path / "clone.tar.zst"
    run_cli("pack", str(clone), "-o", str(out), "--root", str(site_root.path), check=True)
    _fmt, header = read_header(out)
    assert header.prefixes == {"stack": str(clone)}
    assert f"stack/lib/python{stack.python_xy}/site-packages/added.py" in _members(out)


@pytest.mark.skipif(not shutil.which("mksquashfs"), reason="squashfs-tools missing")
def test_pack_squashfs_image_is_a_staged_copy(stack: StackRecord, stack_archive: Path, site_root,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    """`pack --format squashfs --to DIR`: the staged copy, relocated for DIR/sitestack/ID, in a
    squashfs image whose table (after the image) holds the sha256 of each of its chunks."""
    from sitestack.scale.image import read_image

    out = tmp_path / "stack.sqfs"
    r = run_cli("pack", stack.ref, "-o", str(out), "--root", str(site_root.path))
    assert r.returncode == 2 and "give --to DIR" in r.stderr and not out.exists()
    to = tmp_path / "local"
    run_cli("pack", stack.ref, "-o", str(out), "--to", str(to), "--root", str(site_root.path), check=True)
    fmt, header = read_header(out)
    img = read_image(out)
    assert fmt == "squashfs" and header.name == stack.name and header == read_header(stack_archive)[1]
    final = to / "sitestack" / header.dirname
    assert img.mount == str(final) and img.size < out.stat().st_size
    assert len(img.chunks) == -(-img.size // img.chunk)
    with open(out, "rb") as f:  # each chunk's sha256 is that of the image's bytes
        assert hashlib.sha256(f.read(img.chunk)).hexdigest() == img.chunks[0]
    dest = tmp_path / "x"
    subprocess.run(["unsquashfs", "-d", str(dest), "-q", "-n", str(out)], check=True, capture_output=True)
    assert sorted(os.listdir(dest)) == [".sitestack-stage", "activate", "stack"]
    rel = f"lib/python{stack.python_xy}/site-packages/shadowme/__init__.py"
    assert (dest / "stack" / rel).read_bytes() == (stack.prefix / rel).read_bytes()
    sysconfig = next((dest / "stack" / "lib" / f"python{stack.python_xy}").glob("_sysconfigdata_*.py"))
    assert str(final / "stack").encode() in sysconfig.read_bytes()  # relocated for its mount path
    assert str(stack.prefix).encode() not in sysconfig.read_bytes()
    assert f"{final}/stack/bin" in (dest / "activate").read_text()
    links = _hard_links(stack_archive)  # the same stack's hard links: the image keeps them too
    assert links
    _same_inodes(dest, links)


def _hard_links(archive: Path) -> dict[str, str]:
    """The archive's hard-link members: name -> the earlier member it links to."""
    return {n: m.linkname for n, m in _members(archive).items() if m.islnk()}


def _same_inodes(root: Path, links: dict[str, str]) -> None:
    for name, target in links.items():
        a, b = os.stat(root / name), os.stat(root / target)
        assert a.st_ino == b.st_ino and stat.S_ISREG(a.st_mode), name


def test_pack_writes_hard_linked_files_once(stack: StackRecord, stack_archive: Path) -> None:
    manifest = Manifest.load(stack.records / "manifest.json")
    first: dict[tuple[int, int], str] = {}
    want = {}
    for rel in sorted(manifest.files):  # the writer's order: each inode's first name holds the bytes
        st = os.lstat(stack.prefix / rel)
        prev = first.setdefault((st.st_dev, st.st_ino), rel)
        if prev != rel and manifest.files[prev] == manifest.files[rel]:
            want[f"stack/{rel}"] = f"stack/{prev}"
    links = _hard_links(stack_archive)
    assert links == want
    site_pip = f"lib/python{stack.python_xy}/site-packages/pip/"
    pip_copy = {n: t for n, t in links.items() if n.startswith("stack/lib/sitestack-pip/pip/")}
    assert len(pip_copy) > 100  # the layers' pip: hard links of the stack's own
    assert all(t == n.replace("lib/sitestack-pip/pip/", site_pip) for n, t in pip_copy.items())
    # each file's bytes once: smaller than any tar holding every file's bytes (header + data)
    raw = len(zstandard.ZstdDecompressor().decompress(stack_archive.read_bytes(), max_output_size=1 << 31))
    assert raw < sum(512 + -(-e.size // 512) * 512 for e in manifest.files.values())


def test_unpacked_stack_keeps_its_hard_links(stack: StackRecord, stack_archive: Path, tmp_path: Path) -> None:
    from sitestack.core.manifest import verify

    links = _hard_links(stack_archive)
    (tmp_path / "u").mkdir()
    with open(stack_archive, "rb") as f:
        u = unpack_tar(f, tmp_path / "u")  # type: ignore[arg-type]
    _same_inodes(tmp_path / "u", links)
    assert verify(tmp_path / "u" / "stack", u.manifests["stack"], exclude=(), check_mode=True) == []
    gnu = tmp_path / "gnu"  # GNU tar makes the same links from the same stream
    gnu.mkdir()
    subprocess.run(f'zstd -dc "{stack_archive}" | tar -x -C "{gnu}"', shell=True, check=True)
    _same_inodes(gnu, links)


def test_staged_stack_keeps_its_hard_links_and_runs_pip(stack: StackRecord, stack_archive: Path, site_root,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    from sitestack.core.manifest import load_prefix_files, verify

    r = run_cli("stage", "--archive", str(stack_archive), "--to", str(tmp_path / "to"), "--no-mpi", "--json",
                "--root", str(site_root.path), env=clean_env(), check=True)
    final = Path(json.loads(r.stdout)["path"])
    links = _hard_links(stack_archive)
    _same_inodes(final, links)
    # Relocation replaced the files naming the old prefix (and recompiled their .pyc) as new
    # inodes; every other file, hard-linked or not, is as built.
    hits = {h.path for h in load_prefix_files(stack.records / "prefix-files.json")[1]}
    problems = verify(final / "stack", Manifest.load(stack.records / "manifest.json"), exclude=(), check_mode=True)
    assert problems and all(p.path in hits or p.path.endswith(".pyc") for p in problems), problems[:5]
    assert not {p.path for p in problems} & {n[len("stack/"):] for n in [*links, *links.values()]}
    py = final / "stack" / "bin" / f"python{stack.python_xy}"
    out = subprocess.run([str(py), "-m", "pip", "--version"], capture_output=True, text=True, check=True,
                         env={**clean_env(), "PYTHONPATH": str(final / "stack/lib/sitestack-pip")}).stdout
    assert f"from {final}/stack/lib/sitestack-pip/pip" in out, out


# --- crafted, hostile archives ------------------------------------------------------------------

def _unpack(archive: Path, dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    with open(archive, "rb") as f:
        unpack_tar(f, dest)  # type: ignore[arg-type]


def test_refuses_dotdot(tmp_path: Path) -> None:
    a = craft(tmp_path / "a.tar.zst", [_file("stack/../../escaped", b"x")],
              {"files": {"../../escaped": _entry(b"x")}, "symlinks": {}, "dirs": []})
    with pytest.raises(VerifyError, match=r"'\.\.'"):
        _unpack(a, tmp_path / "d")
    assert not (tmp_path / "escaped").exists()


def test_refuses_absolute_path(tmp_path: Path) -> None:
    a = craft(tmp_path / "a.tar.zst", [_file(str(tmp_path / "abs"), b"x")])
    with pytest.raises(VerifyError, match="absolute path"):
        _unpack(a, tmp_path / "d")
    assert not (tmp_path / "abs").exists()


@pytest.mark.parametrize("target", ["../../../etc", "/etc/passwd", "/opt/orig/stackX/a"])
def test_refuses_escaping_symlink(tmp_path: Path, target: str) -> None:
    ti = tarfile.TarInfo("stack/link")
    ti.type, ti.linkname = tarfile.SYMTYPE, target
    a = craft(tmp_path / "a.tar.zst", [(ti, None)],
              {"files": {}, "symlinks": {"link": target}, "dirs": []})
    with pytest.raises(VerifyError, match="points outside"):
        _unpack(a, tmp_path / "d")
    assert not os.path.lexists(tmp_path / "d" / "stack" / "link")


def test_allows_link_into_original_prefix(tmp_path: Path) -> None:
    ti = tarfile.TarInfo("stack/bin/python")
    ti.type, ti.linkname = tarfile.SYMTYPE, "/opt/orig/stack/bin/python3.11"
    a = craft(tmp_path / "a.tar.zst", [(ti, None)],
              {"files": {}, "symlinks": {"bin/python": ti.linkname}, "dirs": ["bin"]})
    _unpack(a, tmp_path / "d")  # relocation maps it inside the staged copy
    assert os.readlink(tmp_path / "d/stack/bin/python") == "/opt/orig/stack/bin/python3.11"


def test_refuses_file_below_symlink(tmp_path: Path) -> None:
    ti = tarfile.TarInfo("stack/lnk")
    ti.type, ti.linkname = tarfile.SYMTYPE, "sub"
    a = craft(tmp_path / "a.tar.zst", [(ti, None), _file("stack/lnk/f", b"x")],
              {"files": {"lnk/f": _entry(b"x")}, "symlinks": {"lnk": "sub"}, "dirs": []})
    with pytest.raises(VerifyError, match="below a symlink"):
        _unpack(a, tmp_path / "d")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_refuses_device_files(tmp_path: Path, kind: bytes) -> None:
    ti = tarfile.TarInfo("stack/dev")
    ti.type, ti.devmajor, ti.devminor = kind, 1, 3
    a = craft(tmp_path / "a.tar.zst", [(ti, None)])
    with pytest.raises(VerifyError, match="device or special"):
        _unpack(a, tmp_path / "d")
    assert not os.path.lexists(tmp_path / "d" / "stack" / "dev")


def test_refuses_sha256_mismatch(tmp_path: Path) -> None:
    a = craft(tmp_path / "a.tar.zst", [_file("stack/f", b"evil")],
              {"files": {"f": [hashlib.sha256(b"good").hexdigest(), 4, 0o644]}, "symlinks": {},
               "dirs": []})
    with pytest.raises(VerifyError, match="sha256 mismatch"):
        _unpack(a, tmp_path / "d")


def test_refuses_file_not_in_manifest(tmp_path: Path) -> None:
    a = craft(tmp_path / "a.tar.zst", [_file("stack/extra", b"x")])
    with pytest.raises(VerifyError, match="not in its manifest"):
        _unpack(a, tmp_path / "d")


def test_refuses_truncated_archive(tmp_path: Path) -> None:
    a = craft(tmp_path / "a.tar.zst", [], {"files": {"f": _entry(b"x")}, "symlinks": {}, "dirs": []})
    with pytest.raises(VerifyError, match="truncated"):
        _unpack(a, tmp_path / "d")


def test_pack_errors_are_one_line(tmp_path: Path, site_root) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("pack", "nosuchstack", "-o", str(tmp_path / "x.tar.zst"), "--root", str(site_root.path))
    assert r.returncode == 2 and r.stderr.startswith("sitestack: error: no stack named")
    assert not (tmp_path / "x.tar.zst").exists()
    r = run_cli("pack", str(tmp_path), "-o", str(tmp_path / "x.tar.zst"), "--root", str(site_root.path))
    assert r.returncode == 2 and "not a Python prefix" in r.stderr


# --- the streaming tar reader -------------------------------------------------------------------

def _with_meta(tmp: Path, body: list[tuple[tarfile.TarInfo, bytes | None]],
               manifest: dict[str, object]) -> bytes:
    a = craft(tmp / "meta.tar.zst", body, manifest)
    return zstandard.ZstdDecompressor().decompress(a.read_bytes(), max_output_size=1 << 30)


def test_refuses_corrupt_tar_header(tmp_path: Path) -> None:
    data = bytearray(_with_meta(tmp_path, [_file("stack/f", b"x")],
                                {"files": {"f": _entry(b"x")}, "symlinks": {}, "dirs": []}))
    i = data.rfind(b"stack/f\0")  # the file's own ustar header
    data[i] = ord("S")
    a = tmp_path / "a.tar.zst"
    a.write_bytes(zstandard.ZstdCompressor().compress(bytes(data)))
    with pytest.raises(VerifyError, match="bad tar header checksum"):
        _unpack(a, tmp_path / "d")


def test_refuses_stream_cut_inside_a_file(tmp_path: Path) -> None:
    blob = os.urandom(5000)
    data = _with_meta(tmp_path, [_file("stack/f", blob)],
                      {"files": {"f": _entry(blob)}, "symlinks": {}, "dirs": []})
    a = tmp_path / "a.tar.zst"
    a.write_bytes(zstandard.ZstdCompressor().compress(data[: data.find(blob) + 2000]))
    with pytest.raises(VerifyError, match="truncated"):
        _unpack(a, tmp_path / "d")


def test_refuses_long_dotdot_name_from_pax(tmp_path: Path) -> None:
    name = "stack/" + "a" * 120 + "/../../../escaped"  # > 100 bytes: the path is a pax record
    a = craft(tmp_path / "a.tar.zst", [_file(name, b"x")],
              {"files": {name[6:]: _entry(b"x")}, "symlinks": {}, "dirs": []})
    with pytest.raises(VerifyError, match=r"'\.\.'"):
        _unpack(a, tmp_path / "d")
    assert not list(tmp_path.rglob("escaped"))


def _link(name: str, type_: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    """A member without data: a hard link, a symlink or a folder."""
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = type_, target, 0o644
    return ti, None


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return _link(name, tarfile.LNKTYPE, target)


def test_accepts_hard_link_to_an_earlier_file(tmp_path: Path) -> None:
    a = craft(tmp_path / "a.tar.zst", [_file("stack/f", b"x"), _hardlink("stack/d/hl", "stack/f")],
              {"files": {"f": _entry(b"x"), "d/hl": _entry(b"x")}, "symlinks": {}, "dirs": ["d"]})
    _unpack(a, tmp_path / "d")
    f, hl = os.stat(tmp_path / "d/stack/f"), os.stat(tmp_path / "d/stack/d/hl")
    assert (f.st_ino, f.st_nlink) == (hl.st_ino, 2) and (tmp_path / "d/stack/d/hl").read_bytes() == b"x"
    assert stat.S_IMODE(hl.st_mode) == 0o644


_X = {"f": _entry(b"x"), "hl": _entry(b"x")}


@pytest.mark.parametrize(("members", "files", "symlinks", "match"), [
    # to a later member, to an unknown one, to itself, to a hard link (no chains)
    ([_hardlink("stack/hl", "stack/f"), _file("stack/f", b"x")], _X, {}, "does not name an earlier file"),
    ([_file("stack/f", b"x"), _hardlink("stack/hl", "stack/nope")], _X, {}, "does not name an earlier file"),
    ([_file("stack/f", b"x"), _hardlink("stack/hl", "stack/hl")], _X, {}, "does not name an earlier file"),
    ([_file("stack/f", b"x"), _hardlink("stack/h0", "stack/f"), _hardlink("stack/hl", "stack/h0")],
     {**_X, "h0": _entry(b"x")}, {}, "does not name an earlier file"),
    # to a symlink, to a folder, to the metadata
    ([_link("stack/s", tarfile.SYMTYPE, "f"), _file("stack/f", b"x"), _hardlink("stack/hl", "stack/s")],
     _X, {"s": "f"}, "does not name an earlier file"),
    ([_link("stack/d", tarfile.DIRTYPE), _file("stack/f", b"x"), _hardlink("stack/hl", "stack/d")],
     _X, {}, "does not name an earlier file"),
    ([_file("stack/f", b"x"), _hardlink("stack/hl", f"{META}/stack/manifest.json")], _X, {},
     "leaves its part"),
    # its own entry: missing, or not the target's (mode, bytes)
    ([_file("stack/f", b"x"), _hardlink("stack/hl", "stack/f")], {"f": _entry(b"x")}, {},
     "hard link stack/hl is not in its manifest"),
    ([_file("stack/f", b"x"), _hardlink("stack/hl", "stack/f")],
     {"f": _entry(b"x"), "hl": [hashlib.sha256(b"x").hexdigest(), 1, 0o755]}, {}, "does not match its manifest"),
    ([_file("stack/f", b"x"), _hardlink("stack/hl", "stack/f")],
     {"f": _entry(b"x"), "hl": _entry(b"y")}, {}, "does not match its manifest"),
    # the name checks of every member
    ([_file("stack/f", b"x"), _hardlink("stack/f", "stack/f")], {"f": _entry(b"x")}, {}, "appears twice"),
    ([_file("stack/f", b"x"), _hardlink("stack/../hl", "stack/f")], {"f": _entry(b"x"), "../hl": _entry(b"x")},
     {}, r"'\.\.'"),
    ([_link("stack/s", tarfile.SYMTYPE, "."), _file("stack/f", b"x"), _hardlink("stack/s/hl", "stack/f")],
     {"f": _entry(b"x"), "s/hl": _entry(b"x")}, {"s": "."}, "below a symlink"),
], ids=["later", "unknown", "itself", "chain", "symlink", "folder", "metadata", "unlisted",
        "other-mode", "other-bytes", "duplicate", "dotdot", "below-symlink"])
def test_refuses_bad_hard_link(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
                               files: dict[str, object], symlinks: dict[str, str], match: str) -> None:
    a = craft(tmp_path / "a.tar.zst", members, {"files": files, "symlinks": symlinks, "dirs": ["d"]})
    with pytest.raises(VerifyError, match=match):
        _unpack(a, tmp_path / "d")
    assert not os.path.lexists(tmp_path / "d/stack/hl") and not os.path.lexists(tmp_path / "d/hl")
    assert not os.path.lexists(tmp_path / "d/stack/s/hl")


def _craft_parts(path: Path, parts: dict[str, dict[str, object]], members: list[tuple[tarfile.TarInfo, bytes | None]],
                 hits: dict[str, list[str]] | None = None) -> Path:
    """craft() for a stack and a layer (role -> manifest), with relocation lists (role -> paths)."""
    prefixes = {role: f"/opt/orig/{role}" for role in parts}
    ms = {role: Manifest.from_json(m) for role, m in parts.items()}
    header = {"format": "sitestack-pack", "name": "evil", "version": "1", "kind": "layer" if len(parts) > 1 else "stack",
              "python_xy": "3.11", "prefixes": prefixes,
              "content_hash": content_hash([(r, prefixes[r], json.dumps(parts[r]).encode()) for r in parts]),
              "files": sum(len(m.files) for m in ms.values()), "bytes": sum(m.total_bytes for m in ms.values())}
    metas: list[tuple[str, object]] = [(f"{META}/header.json", header)]
    for role, m in parts.items():
        metas += [(f"{META}/{role}/manifest.json", m),
                  (f"{META}/{role}/prefix-files.json", {"prefix": prefixes[role], "files": [
                      {"path": p, "kind": "text"} for p in (hits or {}).get(role, [])]})]
    return write_archive(path, metas, members)


def test_refuses_hard_link_into_another_part(tmp_path: Path) -> None:
    one: dict[str, object] = {"files": {"f": _entry(b"x")}, "symlinks": {}, "dirs": []}
    a = _craft_parts(tmp_path / "a.tar.zst", {"stack": one, "layer": {**one, "files": {"hl": _entry(b"x")}}},
                     [_file("stack/f", b"x"), _hardlink("layer/hl", "stack/f")])
    with pytest.raises(VerifyError, match="leaves its part"):
        _unpack(a, tmp_path / "d")
    assert not os.path.lexists(tmp_path / "d/layer/hl")


def test_relocation_never_writes_through_a_hard_link(tmp_path: Path) -> None:
    """Relocation replaces a file by a new inode: its hard-linked twin keeps its own bytes."""
    from sitestack.core.manifest import verify
    from sitestack.scale.node import finish_copy

    text = b"prefix = '/opt/orig/stack'\n"
    files = {"a.txt": _entry(text), "b.txt": _entry(text), "c.txt": _entry(text)}
    a = _craft_parts(tmp_path / "a.tar.zst", {"stack": {"files": files, "symlinks": {}, "dirs": []}},
                     [_file("stack/a.txt", text), _hardlink("stack/b.txt", "stack/a.txt"),
                      _hardlink("stack/c.txt", "stack/a.txt")], {"stack": ["a.txt", "b.txt"]})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with open(a, "rb") as f:
        u = unpack_tar(f, tmp)  # type: ignore[arg-type]
    assert len({os.stat(tmp / "stack" / n).st_ino for n in files}) == 1
    final = tmp_path / "final"
    finish_copy(tmp, final, u)
    want = f"prefix = '{final}/stack'\n".encode()
    assert (tmp / "stack/a.txt").read_bytes() == want == (tmp / "stack/b.txt").read_bytes()
    assert (tmp / "stack/c.txt").read_bytes() == text  # not listed: as its manifest says
    assert [p.path for p in verify(tmp / "stack", u.manifests["stack"], exclude=())] == ["a.txt", "b.txt"]


def test_large_files_are_streamed_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sitestack.scale.unpack

    monkeypatch.setattr(sitestack.scale.unpack, "BIG_FILE", 1000)  # every file below goes the big way
    blob = os.urandom(4321)
    man = {"files": {"big": _entry(blob)}, "symlinks": {}, "dirs": []}
    _unpack(craft(tmp_path / "ok.tar.zst", [_file("stack/big", blob)], man), tmp_path / "ok")
    assert (tmp_path / "ok" / "stack" / "big").read_bytes() == blob
    bad = bytes([blob[0] ^ 1]) + blob[1:]
    with pytest.raises(VerifyError, match="sha256 mismatch"):
        _unpack(craft(tmp_path / "bad.tar.zst", [_file("stack/big", bad)], man), tmp_path / "bad")


def test_mismatch_after_many_files_is_raised_and_nothing_is_left_running(tmp_path: Path) -> None:
    files = {f"d/f{i}": os.urandom(100 + i) for i in range(300)}
    man = {"files": {k: _entry(v) for k, v in files.items()}, "symlinks": {}, "dirs": ["d"]}
    evil = dict(files)
    evil["d/f150"] = b"\0" * len(files["d/f150"])
    members = [_file(f"stack/{k}", v) for k, v in sorted(evil.items())]
    with pytest.raises(VerifyError, match="sha256 mismatch for stack/d/f150"):
        _unpack(craft(tmp_path / "a.tar.zst", members, man), tmp_path / "d")
    assert not (tmp_path / "d" / "stack" / "d" / "f150").exists()  # checked before it is written


# --- the tar writer (scale/tarwriter.py) --------------------------------------------------------

def _tree(root: Path) -> Path:
    """Files of every size class the writer treats apart: empty, small, one that spans several
    of its buffers (PIECE is made small below), a long name, a non-ASCII name; a symlink."""
    rng = random.Random(7)
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "empty").write_bytes(b"")
    (root / "d" / "small.py").write_bytes(b"x = 1\n")
    (root / "d" / "sub" / "big.so").write_bytes(rng.randbytes(70_000))
    (root / "d" / "sub" / "mid.bin").write_bytes(rng.randbytes(3000))
    (root / "d" / ("n" * 120)).write_bytes(b"long name")
    (root / "d" / "caf\u00e9.txt").write_bytes(b"accent")
    os.chmod(root / "d" / "sub" / "big.so", 0o755)
    os.symlink("sub/big.so", root / "d" / "link.so")
    return root


def _write(root: Path, m: Manifest, out: io.BytesIO | None = None) -> bytes:
    from sitestack.scale.tarwriter import write_tar

    out = out or io.BytesIO()
    write_tar(out, [("meta.json", b"{}")], [("stack", str(root), m)])
    return out.getvalue()


@pytest.fixture(params=["inline", "pooled"])
def writer_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Small buffers, so one file spans several; "pooled": every batch counts as slow, so the
    read-ahead threads take over after the first two files (the path of a slow filesystem)."""
    import sitestack.scale.tarwriter as tw

    monkeypatch.setattr(tw, "PIECE", 8192)
    if request.param == "pooled":
        monkeypatch.setattr(tw, "SLOW_READ", -1.0)
        monkeypatch.setattr(tw, "READ_BATCH", 1)
    return str(request.param)


def test_writer_stream_reads_back_as_the_tree(tmp_path: Path, writer_mode: str) -> None:
    from sitestack.core.manifest import scan

    root = _tree(tmp_path / "t")
    m, _ = scan(root)
    with tarfile.open(fileobj=io.BytesIO(_write(root, m)), mode="r:") as tf:
        got = {ti.name: ti for ti in tf}
        for rel, entry in m.files.items():
            ti = got[f"stack/{rel}"]
            data = tf.extractfile(ti).read()  # type: ignore[union-attr]
            assert hashlib.sha256(data).hexdigest() == entry.sha256 and ti.mode == entry.mode
            assert abs(ti.mtime - os.lstat(root / rel).st_mtime) < 1e-6  # sub-second mtime kept
    assert got["stack/d/link.so"].linkname == "sub/big.so"
    assert got["stack/d/sub"].isdir() and list(got)[0] == "meta.json"


@pytest.mark.parametrize("victim", ["d/small.py", "d/sub/mid.bin", "d/sub/big.so"])
def test_writer_refuses_a_file_changed_since_its_manifest(tmp_path: Path, writer_mode: str,
                                                          victim: str) -> None:
    from sitestack.core.manifest import scan

    root = _tree(tmp_path / "t")
    m, _ = scan(root)
    data = (root / victim).read_bytes()
    evil = data[:-1] + bytes([data[-1] ^ 1])
    (root / victim).write_bytes(evil)  # same size, other bytes
    out = io.BytesIO()
    with pytest.raises(VerifyError, match=f"{victim} changed since its manifest was written"):
        _write(root, m, out)
    if len(data) < 8192:  # fits one buffer: checked before any of it goes out
        assert evil not in out.getvalue()
    (root / victim).write_bytes(data + b"!")  # grown
    with pytest.raises(VerifyError, match=f"{victim} changed since its manifest was written"):
        _write(root, m)
    (root / victim).unlink()
    os.mkfifo(root / victim)  # never opened: reading a FIFO would hang
    with pytest.raises(VerifyError, match="no longer a file"):
        _write(root, m)


def test_file_header_is_tar_header() -> None:
    from sitestack.scale.tarwriter import REGTYPE, file_header, tar_header

    for name in ("stack/a.py", "stack/" + "a" * 94, "stack/" + "a" * 95, "stack/caf\u00e9"):
        for size in (0, 1, 8 ** 11 - 1, 8 ** 11):
            for mtime_ns in (0, 1_764_604_000_123_456_789, 1_764_604_000 * 10 ** 9, -3,
                             (8 ** 11 - 1) * 10 ** 9 + 1, 8 ** 11 * 10 ** 9):
                assert file_header(name, 0o755, size, mtime_ns) == tar_header(name, REGTYPE, 0o755, size, mtime_ns)
