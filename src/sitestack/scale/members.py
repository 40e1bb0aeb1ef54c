"""What every member of a sitestack archive must obey, checked before anything is written.

unpack.py reads the tar stream and writes; this module decides, member by member, whether a
member may be written at all (`Members.check`), and what the whole archive must satisfy once
all of it is in (`Members.finish`): absolute paths, '..', members below a symlink, links leaving
the tree, device and special files, duplicates, files missing from the manifest, and hard links
to anything but an earlier file of their part with the same manifest entry (tarlinks.py) are
refused; the header's content hash is recomputed from the manifests every file is checked
against. Paths go through the one rule of core.safepath.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitestack.core import safepath
from sitestack.core.manifest import FileEntry, Manifest, PrefixHit
from sitestack.core.records import MANIFEST, PREFIX_FILES
from sitestack.errors import VerifyError
from sitestack.scale.pack import META, ROLES, SQUASHFS_MAGIC, ZSTD_MAGIC, Header, content_hash
from sitestack.scale.tarlinks import HardLinks
from sitestack.scale.tarstream import (
    CONTIGUOUS,
    DIRECTORY,
    HARDLINK,
    REGULAR,
    SPECIAL,
    SYMLINK,
    Member,
    TarReader,
)


@dataclass
class Unpacked:
    header: Header
    manifests: dict[str, Manifest]
    hits: dict[str, list[PrefixHit]]


def detect_format(first: bytes) -> str:
    if first.startswith(ZSTD_MAGIC):
        return "tar.zst"
    if first.startswith(SQUASHFS_MAGIC):
        return "squashfs"
    raise VerifyError("not a sitestack archive (neither tar.zst nor squashfs)")


def read_tar_header(archive: Path) -> Header:
    """The header of a tar.zst archive file, reading only its start."""
    import zstandard

    try:
        with open(archive, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z:
            tr = TarReader(z.read)
            m = tr.next()
            if m is None or m.name != f"{META}/header.json" or m.type not in (REGULAR, CONTIGUOUS):
                raise VerifyError(f"{archive}: not a sitestack archive (no header first)")
            data = tr.read_meta(m)
    except zstandard.ZstdError as e:
        raise VerifyError(f"{archive}: archive is corrupt: {e}") from None
    return Header.from_json(load_meta(data, "header.json"))


def load_meta(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as e:
        raise VerifyError(f"archive metadata {what} is corrupt: {e}") from None


def parse_manifest(data: Any, what: str) -> Manifest:
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise VerifyError(f"archive manifest {what} is corrupt ({type(e).__name__}: {e})") from None


def parse_hits(data: Any, what: str) -> list[PrefixHit]:
    try:
        return [PrefixHit(str(e["path"]), str(e["kind"])) for e in data["files"]]
    except (KeyError, TypeError, ValueError) as e:
        raise VerifyError(f"archive relocation list {what} is corrupt ({type(e).__name__}: {e})") from None


def _prefix_map(header: Header) -> dict[str, str]:
    return {old: role for role, old in header.prefixes.items()}


def check_link(role: str, rel: str, target: str, header: Header,
               links: dict[str, str] | None = None) -> None:
    """Refuse a symlink that would point outside the staged tree, resolved through the
    links seen so far (absolute links may name an original prefix: relocation maps those
    inside). `links` (tree path -> target) gets this link added."""
    name = f"{role}/{rel}"
    if "\0" in target or not target:
        raise VerifyError(f"unsafe archive: symlink {name} has an empty or bad target")
    known = links if links is not None else {}
    known[name] = target
    try:
        safepath.resolve(name, known.get, _prefix_map(header))
    except safepath.Escape:
        raise VerifyError(f"unsafe archive: symlink {name} -> {target} points outside "
                          "the target") from None


def check_received(header: Header, manifests: dict[str, Manifest], blobs: dict[str, bytes],
                   hits: dict[str, list[PrefixHit]], links: dict[str, str]) -> None:
    """What every archive must satisfy once all of it is in: all links (now that every one is
    known) stay inside; the relocation list names only files of the manifest; and the header's
    content hash, file count and size are those of the manifests every file was checked
    against (the hash is of the manifests' bytes as received, `blobs`, which parse to
    `manifests`). A header cannot claim another stack's identity over other files."""
    safepath.check_links(links, _prefix_map(header))
    for role, role_hits in hits.items():
        listed = manifests[role].files
        for hit in role_hits:
            safepath.check_relative(hit.path, "relocation list")
            if hit.path not in listed or hit.kind not in ("text", "binary"):
                raise VerifyError(f"unsafe archive: the relocation list names {role}/{hit.path}, "
                                  "which is not a file of the archive")
    roles = [r for r in ROLES if r in header.prefixes]
    digest = content_hash([(r, header.prefixes[r], blobs[r]) for r in roles])
    if digest != header.content_hash:
        raise VerifyError(f"archive content does not match its header: the files are not "
                          f"{header.name}/{header.version} {header.short_hash} (they hash to "
                          f"{digest[:12]})")
    files = sum(len(manifests[r].files) for r in roles)
    size = sum(manifests[r].total_bytes for r in roles)
    if (files, size) != (header.files, header.bytes):
        raise VerifyError(f"archive header claims {header.files} files, {header.bytes} bytes; "
                          f"its manifests hold {files} files, {size} bytes")


# What Members.check tells the writer to do with a member.
HEADER, META_FILE, SKIP, MAKE_DIR, MAKE_SYMLINK, MAKE_HARDLINK, WRITE_FILE = range(7)


class Members:
    """The members of one tar stream, checked in order: the header first, then each part's
    metadata (manifest, relocation list), then its tree, every entry against that manifest."""

    def __init__(self) -> None:
        self.header: Header | None = None
        self.manifests: dict[str, Manifest] = {}
        self.blobs: dict[str, bytes] = {}
        self.hits: dict[str, list[PrefixHit]] = {}
        self.seen: set[str] = set()
        self.links: set[str] = set()  # symlink member names, for "below a symlink"
        self.all_links: dict[str, str] = {}  # tree path -> target, resolved through each other
        self.dirsets: dict[str, set[str]] = {}
        self.hard = HardLinks()

    def check(self, m: Member) -> tuple[int, str, FileEntry | None]:
        """(what to do, the member's tree path, its manifest entry for a file)."""
        name = m.name.rstrip("/")
        safepath.check_relative(name, "archive")
        if name in self.seen:
            raise VerifyError(f"unsafe archive: {name} appears twice")
        self.seen.add(name)
        if m.type in SPECIAL:
            raise VerifyError(f"unsafe archive: device or special file {name}")
        is_file = m.type in (REGULAR, CONTIGUOUS)
        header = self.header
        if header is None:
            if name != f"{META}/header.json" or not is_file:
                raise VerifyError("not a sitestack archive (no header first)")
            return HEADER, name, None
        role, _, rel = name.partition("/")
        if role == META:
            if name == META:
                return SKIP, name, None
            if rel.partition("/")[0] not in header.prefixes or not is_file:
                raise VerifyError(f"unexpected archive member {name}")
            return META_FILE, name, None
        man = self.manifests.get(role)
        if man is None:
            raise VerifyError(f"archive member {name} comes before its manifest")
        if role not in self.dirsets:
            self.dirsets[role] = set(man.dirs)
        if self.links:
            i = name.find("/")
            while i >= 0:
                if name[:i] in self.links:
                    raise VerifyError(f"unsafe archive: {name} is below a symlink")
                i = name.find("/", i + 1)
        if not rel:
            if m.type != DIRECTORY:
                raise VerifyError(f"unexpected archive member {name}")
            return MAKE_DIR, name, None
        if m.type == DIRECTORY:
            if rel not in self.dirsets[role]:
                raise VerifyError(f"archive folder {name} is not in its manifest")
            return MAKE_DIR, name, None
        if m.type == SYMLINK:
            if man.symlinks.get(rel) != m.linkname:
                raise VerifyError(f"archive symlink {name} does not match its manifest")
            check_link(role, rel, m.linkname, header, self.all_links)
            self.links.add(name)
            return MAKE_SYMLINK, name, None
        if m.type == HARDLINK:
            self.hard.check(name, m.linkname, man)
            return MAKE_HARDLINK, name, None
        if is_file:
            entry = man.files.get(rel)
            if entry is None:
                raise VerifyError(f"archive file {name} is not in its manifest")
            if m.size != entry.size:
                raise VerifyError(f"sha256 mismatch for {name}: the archive is corrupt "
                                  f"({m.size} bytes, the manifest says {entry.size})")
            self.hard.files[name] = entry
            return WRITE_FILE, name, entry
        raise VerifyError(f"unsafe archive: unsupported member type for {name}")

    def take_header(self, data: bytes) -> None:
        self.header = Header.from_json(load_meta(data, f"{META}/header.json"))

    def take_meta(self, name: str, blob: bytes) -> None:
        """A part's manifest or relocation list (other metadata files are read and ignored)."""
        r, _, what = name.split("/", 1)[1].partition("/")
        data = load_meta(blob, name)
        if what == MANIFEST:
            self.manifests[r], self.blobs[r] = parse_manifest(data, name), blob
        elif what == PREFIX_FILES:
            self.hits[r] = parse_hits(data, name)

    def finish(self) -> Unpacked:
        """Every file of every manifest came, and the archive as a whole is what it claims."""
        header = self.header
        if header is None:
            raise VerifyError("archive is empty")
        for role in header.prefixes:
            if role not in self.manifests:
                raise VerifyError(f"archive has no manifest for {role}")
            man = self.manifests[role]
            missing = {f"{role}/{p}" for p in [*man.files, *man.symlinks]} - self.seen
            if missing:
                raise VerifyError(f"archive is truncated: {len(missing)} files missing, "
                                  f"e.g. {sorted(missing)[0]}")
        check_received(header, self.manifests, self.blobs, self.hits, self.all_links)
        return Unpacked(header, self.manifests, self.hits)

