"""pack keeps which files of a published stack matched their sha256 (core/checked.py): the next
pack hashes only the files whose inode or ctime changed since, packs the same bytes, and still
refuses a tampered file; what a ctime cannot show is caught by unpack's own sha256 check."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitestack.core import checked as checked_mod
from sitestack.core.checked import Checked
from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import Manifest
from sitestack.core.records import StackRecord
from sitestack.errors import VerifyError
from sitestack.scale import tarwriter
from sitestack.scale.pack import pack
from sitestack.scale.unpack import unpack_tar


@pytest.fixture(scope="module")
def own(build_stack, site_root: SiteRoot) -> StackRecord:  # type: ignore[no-untyped-def]
    """A stack of this module's own: its files are tampered with (and put back)."""
    rec: StackRecord = build_stack("checkedpack", "1", ["shadowme==1.0", "tinyapp"])
    return rec


@pytest.fixture()
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The files each pack hashes (its sha256 checks), in order; no racy margin, as if the
    stack had been built long ago."""
    monkeypatch.setattr(checked_mod, "RACY_NS", 0)
    seen: list[str] = []
    real = tarwriter._check

    def spy(checks: list[tarwriter.Check]) -> None:
        seen.extend(rel for _data, _h, expected, _src, rel in checks if expected is not None)
        real(checks)

    monkeypatch.setattr(tarwriter, "_check", spy)
    yield seen


@pytest.fixture()
def victim(own: StackRecord) -> Iterator[Path]:
    """One module of the stack, opened for tampering and put back as built."""
    path = own.site_packages / "shadowme" / "__init__.py"
    data, st = path.read_bytes(), path.stat()
    yield path
    os.chmod(path, 0o644)
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(path, st.st_mode & 0o7777)


def _state(root: SiteRoot, rec: StackRecord) -> Checked:
    data = (rec.records / "manifest.json").read_bytes()
    return Checked.load(root.checked(rec.name, rec.version), hashlib.sha256(data).hexdigest(),
                        len(Manifest.parse(data, rec.records / "manifest.json").files))


def test_the_next_pack_hashes_nothing_that_did_not_change(own: StackRecord, site_root: SiteRoot,
                                                         hashed: list[str], tmp_path: Path) -> None:
    site_root.checked(own.name, own.version).unlink(missing_ok=True)
    files = sorted(Manifest.load(own.records / "manifest.json").files)
    pack(own.ref, site_root, tmp_path / "1.tar.zst")
    # each once (lib/sitestack-pip's hard links of pip go as link members, not hashed again)
    assert len(hashed) == len(set(hashed)) and f"lib/python{own.python_xy}/site-packages/shadowme/__init__.py" in hashed
    state = _state(site_root, own)
    assert all(state.trusted(i, os.lstat(own.prefix / rel)) for i, rel in enumerate(files))
    hashed.clear()
    pack(own.ref, site_root, tmp_path / "2.tar.zst")
    assert hashed == []
    assert (tmp_path / "1.tar.zst").read_bytes() == (tmp_path / "2.tar.zst").read_bytes()
    os.chmod(own.prefix / files[0], 0o444)  # a new ctime, whatever the mode was
    pack(own.ref, site_root, tmp_path / "3.tar.zst")
    assert hashed == [files[0]]


def test_the_records_manifest_is_canonical_and_packed_as_it_is(own: StackRecord, site_root: SiteRoot,
                                                                tmp_path: Path) -> None:
    """build saves the manifest in the one form its content hash is taken of, so pack hashes and
    packs the file's bytes without serializing it again, and the archive is what it always was."""
    import tarfile

    import zstandard

    from sitestack.scale.pack import META, content_hash

    saved = (own.records / "manifest.json").read_bytes()
    manifest = Manifest.parse(saved, own.records / "manifest.json")
    assert saved == manifest.canonical_json() + b"\n"
    header = pack(own.ref, site_root, tmp_path / "s.tar.zst")
    with open(tmp_path / "s.tar.zst", "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z, \
            tarfile.open(fileobj=z, mode="r|") as tf:
        for m in tf:
            if m.name == f"{META}/stack/manifest.json":
                packed = tf.extractfile(m).read()  # type: ignore[union-attr]
                break
    assert packed == manifest.canonical_json()
    assert header.content_hash == content_hash([("stack", str(own.prefix), manifest)])


def test_a_tampered_file_with_its_old_mtime_is_still_refused(own: StackRecord, site_root: SiteRoot,
                                                            hashed: list[str], victim: Path,
                                                            tmp_path: Path) -> None:
    pack(own.ref, site_root, tmp_path / "a.tar.zst")  # every file trusted from here on
    st = victim.stat()
    os.chmod(victim, 0o644)
    victim.write_bytes(victim.read_bytes().replace(b"1.0", b"6.6"))  # same size
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(victim, st.st_mode & 0o7777)
    hashed.clear()
    with pytest.raises(VerifyError, match="shadowme/__init__.py changed since its manifest was written"):
        pack(own.ref, site_root, tmp_path / "b.tar.zst")
    assert [rel for rel in hashed if rel.endswith("shadowme/__init__.py")], hashed
    assert not (tmp_path / "b.tar.zst").exists()


def test_what_the_state_wrongly_trusts_unpack_refuses(own: StackRecord, site_root: SiteRoot,
                                                      hashed: list[str], victim: Path, tmp_path: Path) -> None:
    """A state file that vouches for changed bytes (written by someone who can write the site's
    state, or a disk that rotted under an unchanged inode) gets them packed: the archive then
    carries the manifest's sha256, and unpack refuses them before anything is published."""
    os.chmod(victim, 0o644)
    victim.write_bytes(victim.read_bytes().replace(b"1.0", b"6.6"))
    files = sorted(Manifest.load(own.records / "manifest.json").files)
    forged = _state(site_root, own)
    forged.start(10**30)
    for i, rel in enumerate(files):
        forged.confirm(i, os.lstat(own.prefix / rel))
    forged.save()
    pack(own.ref, site_root, tmp_path / "bad.tar.zst")
    assert not [rel for rel in hashed if rel.endswith("shadowme/__init__.py")]
    with open(tmp_path / "bad.tar.zst", "rb") as f, pytest.raises(VerifyError, match="shadowme/__init__.py"):
        unpack_tar(f, tmp_path / "out")  # type: ignore[arg-type]


def test_a_user_packs_a_site_stack_without_writing_its_state(own: StackRecord, site_root: SiteRoot,
                                                            user_sitestack: dict[str, str]) -> None:
    from tests.helpers import users

    user = users.ensure_user()
    state = site_root.checked(own.name, own.version)
    state.unlink(missing_ok=True)
    out = users.make_user_dir(user)
    try:
        r = users.run_as(user, [str(own.python_exe), "-m", "sitestack", "pack", own.ref, "-o", f"{out}/s.tar.zst",
                                "--root", str(site_root.path)],
                         env={"PYTHONPATH": user_sitestack["PYTHONPATH"],
                              "PATH": f"{user_sitestack['PATH']}:/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        assert (out / "s.tar.zst").stat().st_size > 0 and not state.exists()
    finally:
        subprocess.run(["rm", "-rf", str(out)], check=True)


def test_a_hardlink_clone_does_not_make_the_next_pack_hash_the_stack_again(
        own: StackRecord, site_root: SiteRoot, hashed: list[str], tmp_path: Path) -> None:
    """`cp -al` (what `sitestack clone --mode hardlink` does to the inodes) gives every file a
    new ctime: the packs with the clone there, and after its removal, hash nothing. A clone
    made and removed between two packs leaves nothing to tell it from tampering: every file
    it linked is hashed again, once."""
    pack(own.ref, site_root, tmp_path / "0.tar.zst")
    hashed.clear()
    subprocess.run(["cp", "-al", str(own.prefix), str(tmp_path / "clone")], check=True)
    pack(own.ref, site_root, tmp_path / "1.tar.zst")
    assert hashed == []
    subprocess.run(["rm", "-rf", str(tmp_path / "clone")], check=True)
    pack(own.ref, site_root, tmp_path / "2.tar.zst")
    assert hashed == []
    assert (tmp_path / "0.tar.zst").read_bytes() == (tmp_path / "2.tar.zst").read_bytes()
    subprocess.run(["cp", "-al", str(own.prefix), str(tmp_path / "clone")], check=True)
    subprocess.run(["rm", "-rf", str(tmp_path / "clone")], check=True)
    pack(own.ref, site_root, tmp_path / "3.tar.zst")
    assert f"lib/python{own.python_xy}/site-packages/shadowme/__init__.py" in hashed
    hashed.clear()
    pack(own.ref, site_root, tmp_path / "4.tar.zst")
    assert hashed == []


def test_a_write_through_a_hard_link_is_refused(own: StackRecord, site_root: SiteRoot, hashed: list[str],
                                                victim: Path, tmp_path: Path) -> None:
    """The link count changed, and so did the mtime: hashed, and refused."""
    pack(own.ref, site_root, tmp_path / "a.tar.zst")
    link = tmp_path / "link"
    os.link(victim, link)
    try:
        os.chmod(link, 0o644)
        with open(link, "r+b") as f:  # in place, same size
            f.write(b"#")
        with pytest.raises(VerifyError, match="shadowme/__init__.py changed since its manifest was written"):
            pack(own.ref, site_root, tmp_path / "b.tar.zst")
    finally:
        link.unlink()


def test_a_write_through_a_kept_link_with_its_mtime_put_back_unpack_refuses(
        own: StackRecord, site_root: SiteRoot, hashed: list[str], victim: Path, tmp_path: Path) -> None:
    """The one change the link rule cannot tell from a clone: a hard link left behind, a write
    through it, and the old mtime put back (which takes the file's owner or root, who can write
    the state file itself). pack packs it unhashed; unpack refuses it before publishing."""
    pack(own.ref, site_root, tmp_path / "a.tar.zst")
    st = victim.stat()
    link = tmp_path / "link"
    os.link(victim, link)
    try:
        os.chmod(link, 0o644)
        link.write_bytes(link.read_bytes().replace(b"1.0", b"6.6"))
        os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(link, st.st_mode & 0o7777)
        hashed.clear()
        pack(own.ref, site_root, tmp_path / "bad.tar.zst")
        assert not [rel for rel in hashed if rel.endswith("shadowme/__init__.py")]
        with open(tmp_path / "bad.tar.zst", "rb") as f, pytest.raises(VerifyError, match="shadowme/__init__.py"):
            unpack_tar(f, tmp_path / "out")  # type: ignore[arg-type]
    finally:
        link.unlink()
