"""One site-cache entry on disk: its folder name, its records, and what a pin is.

An entry is ROOT/.sitestack/pypi/NAME-VERSION[-src]-KEY/ with `tree/` (the installed files,
read-only), `entry.json` (the pin, the prefixes its text files name and must be rewritten
for, the build options' hash) and `files.json` (the sha256, size and mode of every file, so
a stack that links the entry never reads those bytes again). The key covers the pin (a
local wheel by content), the interpreter's cache tag and platform, and for a source build
a hash of its options. build/cachefill.py writes entries; build/pkgcache.py finds and
links them, and gc (build/gc.py) removes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.manifest import Manifest

if TYPE_CHECKING:
    from sitestack.site.spec import BuildOptions


ENTRY = "entry.json"


FILES = "files.json"  # Manifest of the entry's tree, modes as linked (read-only)


@dataclass(frozen=True)
class Entry:
    path: Path  # the entry folder; its files are under path / "tree"
    pin: str
    rewrite: tuple[str, ...]  # files that name an old prefix: copied and rewritten
    old: tuple[str, ...]  # the prefixes they name
    options: str = ""  # hash of the build options of a source build, "" for a wheel

    @property
    def tree(self) -> Path:
        return self.path / "tree"

    def files(self) -> Manifest | None:
        """The entry's recorded hashes (None for entries cached before they were kept)."""
        from sitestack.errors import VerifyError

        try:
            return Manifest.load(self.path / FILES)
        except (OSError, VerifyError):
            return None  # then the stack hashes these files itself


def local_wheel(pin: str) -> Path | None:
    """The wheel file of a local pin (`name @ file://...`, a file URL or a bare path)."""
    if " @ file://" in pin:
        return Path(pin.split(" @ file://", 1)[1])
    if pin.startswith("file://"):
        return Path(pin[len("file://"):])
    return Path(pin) if pin.startswith("/") else None


def is_wheel_file(pin: str) -> bool:
    """A pin that is a wheel file on this machine: it needs neither a resolve nor a download."""
    path = local_wheel(pin)
    return path is not None and path.suffix == ".whl" and path.is_file()


def pin_name(pin: str) -> str:
    """The canonical project name of a pin."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    path = local_wheel(pin)
    if path is not None and " @ " not in pin:
        return canonicalize_name(path.name.split("-")[0])
    return canonicalize_name(Requirement(pin).name)


def options_hash(opts: BuildOptions | None, pins: Sequence[str] = ()) -> str:
    """A source build's identity beyond its pin: no-binary and every env value; without build
    isolation also the set's pins (horovod compiled against torch X is not one against Y)."""
    if opts is None:
        return ""
    d: dict[str, object] = {"no_binary": opts.no_binary, "env": dict(sorted(opts.env.items()))}
    if not opts.build_isolation:  # only then: the keys of isolated builds stay as they were
        # By name and version (safe_name): a local wheel's path (stdlib pip's) differs per build.
        d |= {"build_isolation": False, "against": sorted(safe_name(p) for p in pins)}
    doc = json.dumps(d, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def safe_name(pin: str) -> str:
    if (path := local_wheel(pin)) is not None:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name)[:80]
    name = pin.split("==")[0].split(" @ ")[0].strip()
    version = pin.split("==")[1] if "==" in pin else "local"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{name}-{version}")[:80]


def entry_key(pin: str, tag: str, options: str = "") -> str:
    """Cache key: the pin, or for a local file its name and content hash, the interpreter's
    tag and platform, and the build options' hash.

    A local wheel's path changes with every build (it may sit in the build folder), its
    content does not.
    """
    ident = pin
    if (path := local_wheel(pin)) is not None and path.is_file():
        ident = f"{path.name} sha256={hashlib.sha256(path.read_bytes()).hexdigest()}"
    extra = f"\noptions={options}" if options else ""
    return hashlib.sha256(f"{ident}\n{tag}{extra}".encode()).hexdigest()[:20]


def load_entry(path: Path) -> Entry:
    data = json.loads((path / ENTRY).read_text(encoding="utf-8"))
    return Entry(path, data["pin"], tuple(data["rewrite"]), tuple(data["old"]), data.get("options", ""))
