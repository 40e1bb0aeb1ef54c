"""A cold build's wheels installed by uv while the resolve runs, checked against it after.

The site cache installs exact pins, so a build resolves first and installs after; on an
empty cache the downloads then wait for the whole resolve (0.7 s of the small set's 13 s),
where a plain `uv pip install` resolves and downloads at once. A build of a new stack name
therefore also starts one uv install of the requirements WITH their dependencies into a
shared temp tree beside the resolve. The resolve stays the only authority: the tree is
used only when the resolve finds every pin missing from the cache and the tree holds
exactly those pins' versions; otherwise uv is stopped and the tree removed, and the
missing pins are installed as usual (a partly cached set would be compiled in full for
nothing). The caller holds the cache lock (the temp lives among the entries' temps).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sitestack.build.cacheentry import pin_name
from sitestack.build.cacheuv import install_args
from sitestack.core.fsutil import rmtree
from sitestack.core.publish import make_temp
from sitestack.core.uvtool import uv_bin, uv_env

if TYPE_CHECKING:
    from sitestack.core.log import BuildLog


class Prefill:
    """One uv install of `requirements` (with dependencies) into `temp/tree`, running."""

    def __init__(self, requirements: Sequence[str], python: str, index: Sequence[str], base: Path,
                 log: BuildLog, uv_cache: Path) -> None:
        self.log = log
        self.temp = make_temp(base, ".tmp-all-", 0o700)
        self.cmd = [uv_bin(), *install_args(python, self.temp / "tree", index, uv_cache, deps=True),
                    *requirements]
        self._out = open(self.temp / "uv.log", "w+b")  # noqa: SIM115 (closed in _wait)
        try:
            # umask 022, as every uv run for the site cache (cacheuv.run_uv); its own
            # session, so that stopping it stops whatever it started too.
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
                env=uv_env(), umask=0o022, start_new_session=True)
        except BaseException:
            self._out.close()
            rmtree(self.temp)
            raise

    def take(self, missing: Sequence[str], pins: Sequence[str]) -> Path | None:
        """The shared temp (its `tree/` holds every missing pin) when it is usable, else
        None, uv stopped and the temp removed. `pins`: the resolved set, `missing`: those of
        them not in the cache, local wheel files left out of both."""
        if not missing or len(missing) != len(pins):
            self.discard("some of the set is cached already")
            return None
        rc = self._wait()
        if rc != 0:
            self.discard(f"uv exited with {rc}")  # the usual install then reports the error
            return None
        found = installed_versions(self.temp / "tree")
        wrong = [p for p in missing if not _same(pin_version(p), found.get(pin_name(p)))]
        if wrong:
            self.discard(f"it differs from the resolve at {', '.join(wrong[:5])}")
            return None
        self.log.add(f"using the install started beside the resolve ({len(missing)} distribution(s))")
        return self.temp

    def discard(self, why: str) -> None:
        """Stop uv (if running) and remove the temp; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        self._wait()
        if self.temp.exists():
            self.log.add(f"not using the install started beside the resolve: {why}")
            rmtree(self.temp)

    def _wait(self) -> int:
        if self.proc is None:
            return -1
        rc = self.proc.wait()
        self.proc = None
        self._out.seek(0)
        self.log.add("$ " + " ".join(self.cmd) + "\n" + self._out.read().decode(errors="replace"))
        self._out.close()
        return rc


def pin_version(pin: str) -> str | None:
    """The version of a `name==version` pin (None for a URL or a local file)."""
    if "==" not in pin or "@" in pin:
        return None
    return pin.split("==", 1)[1].split(";", 1)[0].strip()


def _same(pinned: str | None, installed: str | None) -> bool:
    from packaging.version import InvalidVersion, Version

    if pinned is None or installed is None:
        return False
    try:
        return Version(pinned) == Version(installed)
    except InvalidVersion:
        return pinned == installed


def installed_versions(tree: Path) -> Mapping[str, str]:
    """{canonical name: version} of the dist-info folders under a prefix's site-packages."""
    from packaging.utils import canonicalize_name

    out: dict[str, str] = {}
    for sp in tree.glob("lib/python*/site-packages"):
        for info in sp.glob("*.dist-info"):
            name, _, version = info.name[: -len(".dist-info")].rpartition("-")
            out[canonicalize_name(name)] = version
    return out
