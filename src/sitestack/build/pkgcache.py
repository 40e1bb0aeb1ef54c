"""Site-wide cache of installed, compiled PyPI distributions, hardlinked into stacks.

A centre publishes a new dated stack every few months, mostly with the same packages.
Each distribution (one `name==version` for one interpreter tag and platform) is installed
once by uv into its own small prefix under ROOT/.sitestack/pypi, compiled to bytecode,
made read-only, and from then on hardlinked into every stack that pins it, as conda's
package cache does. Two versions that share numpy share its inodes, and a rebuild skips
both the copy and the compile.

Files that name a prefix (console-script shebangs, direct_url.json of a local wheel) are
listed per entry and always copied and rewritten, never linked. A stack never depends on
the cache: deleting ROOT/.sitestack/pypi leaves every published stack intact (its files
are hardlinks, not references). The cache is never written in place: entries are built in
a temp folder and renamed, and sitestack replaces files as new inodes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sitestack.core.bytecode import compile_dirs
from sitestack.core.fsutil import atomic_write_json, file_lock, make_readonly, rmtree
from sitestack.core.manifest import scan
from sitestack.core.publish import clear_stale, make_temp, publish
from sitestack.core.uvtool import run_logged, uv_bin, uv_env

if TYPE_CHECKING:
    from sitestack.core.layout import SiteRoot
    from sitestack.core.log import BuildLog

ENTRY = "entry.json"


@dataclass(frozen=True)
class Entry:
    path: Path  # the entry folder; its files are under path / "tree"
    pin: str
    rewrite: tuple[str, ...]  # files that name an old prefix: copied and rewritten
    old: tuple[str, ...]  # the prefixes they name

    @property
    def tree(self) -> Path:
        return self.path / "tree"


def cache_root(root: SiteRoot) -> Path:
    return root.meta / "pypi"


def _uv(args: list[str], log: BuildLog, what: str, stdin: str | None = None) -> str:
    return run_logged([uv_bin(), *args], log, what, env=uv_env(), stdin=stdin)


def resolve(requirements: Sequence[str], python: str, index: Sequence[str], log: BuildLog) -> list[str]:
    """Exact pins for the whole set, resolved by uv for this interpreter."""
    out = _uv(["pip", "compile", "-", "--python", python, "--no-header", "--no-annotate", "--quiet", *index],
              log, "resolving packages", stdin="\n".join(requirements) + "\n")
    return [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _local(pin: str) -> Path | None:
    """The wheel file of a local pin (`name @ file://...`, a file URL or a bare path)."""
    if " @ file://" in pin:
        return Path(pin.split(" @ file://", 1)[1])
    if pin.startswith("file://"):
        return Path(pin[len("file://"):])
    return Path(pin) if pin.startswith("/") else None


def _key(pin: str, tag: str) -> str:
    """Cache key: the pin, or for a local wheel its file name and content hash, plus the tag.

    A local wheel's path changes with every build (it may sit in the build folder), its
    content does not.
    """
    ident = pin
    if (path := _local(pin)) is not None:
        ident = f"{path.name} sha256={hashlib.sha256(path.read_bytes()).hexdigest()}"
    return hashlib.sha256(f"{ident}\n{tag}".encode()).hexdigest()[:20]


def _tag(python: str) -> str:
    r = subprocess.run([python, "-I", "-c", "import sys, sysconfig; print(sys.implementation.cache_tag, "
                        "sysconfig.get_platform())"], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _load(path: Path) -> Entry:
    data = json.loads((path / ENTRY).read_text(encoding="utf-8"))
    return Entry(path, data["pin"], tuple(data["rewrite"]), tuple(data["old"]))


def ensure(pins: Sequence[str], python: str, prefix: Path, py_xy: str, index: Sequence[str],
           root: SiteRoot, log: BuildLog) -> list[Entry]:
    """Every pin's entry, installing and compiling the missing ones (one uv call each)."""
    base = cache_root(root)
    base.mkdir(parents=True, exist_ok=True)
    tag = _tag(python)
    names = {pin: f"{_safe(pin)}-{_key(pin, tag)}" for pin in pins}
    missing = [p for p in pins if not (base / names[p] / ENTRY).is_file()]
    if missing:
        with file_lock(root.locks / "pypi-cache.lock", what="the site's package cache"):
            clear_stale(base, ".tmp-", locked=True)  # we hold the lock: from killed builds
            missing = [p for p in missing if not (base / names[p] / ENTRY).is_file()]
            if missing:
                log.step(f"installing {len(missing)} new distribution(s) into the site cache")
                _populate(missing, names, python, prefix, py_xy, index, base, log)
    return [_load(base / names[p]) for p in pins]


def _safe(pin: str) -> str:
    if (path := _local(pin)) is not None:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name)[:80]
    name = pin.split("==")[0].split(" @ ")[0].strip()
    version = pin.split("==")[1] if "==" in pin else "local"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{name}-{version}")[:80]


def _populate(missing: Sequence[str], names: dict[str, str], python: str, prefix: Path, py_xy: str,
              index: Sequence[str], base: Path, log: BuildLog) -> None:
    temps: dict[str, Path] = {}
    try:
        for pin in missing:
            tmp = make_temp(base, ".tmp-", 0o700)
            temps[pin] = tmp
            _uv(["pip", "install", "--no-deps", "--link-mode", "copy", "--prefix", str(tmp / "tree"),
                 "--python", python, *index, pin], log, f"installing {pin}")
        # One compile for all new entries: every core busy once, not once per package.
        compile_dirs(python, [str(t / "tree" / "lib" / f"python{py_xy}") for t in temps.values()], log)
        for pin, tmp in temps.items():
            old = (str(tmp / "tree"), str(prefix))
            _m, hits = scan(tmp / "tree", old, exclude=())
            atomic_write_json(tmp / ENTRY, {"pin": pin, "old": list(old), "rewrite": sorted(h.path for h in hits)})
            make_readonly(tmp)
            try:
                publish(tmp, base / names[pin])
            except OSError:
                rmtree(tmp)  # another build made it first
    finally:
        for tmp in temps.values():
            rmtree(tmp)


def link(entries: Sequence[Entry], prefix: Path) -> tuple[int, int]:
    """Hardlink every entry's files into `prefix`; copy and rewrite the prefix-naming ones."""
    linked = copied = 0
    new = str(prefix).encode()
    for e in entries:
        tree = str(e.tree)
        rewrite = set(e.rewrite)
        for dirpath, dirnames, filenames in os.walk(tree):
            rel_dir = os.path.relpath(dirpath, tree)
            dest_dir = prefix if rel_dir == "." else prefix / rel_dir
            for d in dirnames:
                src = os.path.join(dirpath, d)
                if os.path.islink(src):
                    _replace_link(src, dest_dir / d)
                else:
                    (dest_dir / d).mkdir(exist_ok=True)
            for f in filenames:
                src = os.path.join(dirpath, f)
                dest = dest_dir / f
                rel = f if rel_dir == "." else f"{rel_dir}/{f}"
                if os.path.lexists(dest):
                    os.unlink(dest)  # a file two distributions ship: the later wins, as with pip
                if os.path.islink(src):
                    _replace_link(src, dest)
                elif rel in rewrite:
                    data = Path(src).read_bytes()
                    for o in e.old:
                        data = data.replace(o.encode(), new)
                    dest.write_bytes(data)
                    os.chmod(dest, os.stat(src).st_mode & 0o777 | 0o200)
                    copied += 1
                else:
                    try:
                        os.link(src, dest)
                        linked += 1
                    except OSError:
                        shutil.copy2(src, dest)  # another filesystem, or not allowed
                        copied += 1
    return linked, copied


def _replace_link(src: str, dest: Path) -> None:
    if os.path.lexists(dest):
        os.unlink(dest)
    os.symlink(os.readlink(src), dest)
