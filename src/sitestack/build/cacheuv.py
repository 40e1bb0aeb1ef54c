"""How the site cache runs uv: under umask 022, hardlinking from the site's own uv cache,
with uv compiling the bytecode (build/cachefill.py, build/pkgcache.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core.uvtool import run_logged, uv_bin, uv_env

if TYPE_CHECKING:
    from sitestack.core.log import BuildLog


def run_uv(args: list[str], log: BuildLog, what: str, stdin: str | None = None,
           env: Mapping[str, str] | None = None, tail: int | None = None) -> str:
    """uv for the site cache, under umask 022 whatever ours is: uv makes the site's uv cache
    and the entries' files with its umask, and neither may be group- or world-writable
    (entries are then made read-only; the uv cache is hardlinked into them)."""
    return run_logged([uv_bin(), *args], log, what, env=uv_env(dict(env or {})), stdin=stdin, tail=tail,
                      umask=0o022)


def install_args(python: str, tree: Path, index: Sequence[str], uv_cache: Path | None = None,
                 compile: bool = True) -> list[str]:
    """uv's install of exact pins into an entry's tree. With `uv_cache` (the site's own uv
    cache, on the site's filesystem) uv hardlinks the unzipped wheels, as a plain
    `uv pip install` does from its cache: copying them wrote 470 MiB more for the small set
    (install step 9.1-9.7 s against 1.1-1.5 s, measured under load). It must be sitestack's
    own cache: the entries are made read-only through those shared inodes, and a user's uv
    cache would then hand read-only files to their venvs. uv never writes a cached file in
    place, so the entries stay as hashed; deleting that cache (or the whole site cache)
    leaves every stack intact. Without it (source builds, --no-cache) the files are copied."""
    # --compile-bytecode: uv's compiler (its own pool of the target python) beats one
    # compileall run over the same files by about a quarter.
    link = ["--link-mode", "hardlink", "--cache-dir", str(uv_cache)] if uv_cache else ["--link-mode", "copy"]
    return ["pip", "install", "--no-deps", *link, *(["--compile-bytecode"] if compile else []), "--prefix", str(tree),
            "--python", python, *index]
