"""Conda stack lock files: rattler's LockFile (the pixi.lock format conda-lock and pixi read).

Every conda package's URL and hash, plus the PyPI layer's pins. `sitestack build
--from-lock` rebuilds exactly that set (see conda.install_from_lock).
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sitestack.conda.records import (
    ENVIRONMENT,
    CondaRecord,
    CondaResult,
    first_lines,
    load_rattler,
    to_records,
)
from sitestack.errors import BuildError, UsageError


def _lock_channel(url: str) -> Any:
    rattler = load_rattler()
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    return rattler.LockChannel(url.rstrip("/") + "/")


def write_lock(path: Path, result: CondaResult, pypi_pins: Mapping[str, str] | None = None) -> None:
    """Write rattler's LockFile (pixi.lock format): every conda URL + hash, then PyPI pins.

    `pypi_pins` maps a name to a version or to a URL/location; a bare version is stored with
    the location https://pypi.org/project/NAME/VERSION/. Conda-provided names are left out.
    """
    if not result.repodata:
        raise BuildError("internal: a CondaResult without repodata records cannot be locked")
    _write_lock(Path(path), result.repodata, result.channels, result.specs, pypi_pins or {},
                set(result.provides))


def _write_lock(
    path: Path, repodata: Sequence[Any], channels: Sequence[str], specs: Sequence[str],
    pypi_pins: Mapping[str, str], provides: set[str],
) -> None:
    rattler = load_rattler()
    plat = rattler.LockPlatform(str(rattler.Subdir.current()))
    lock = rattler.LockFile([plat])
    lock.set_channels(ENVIRONMENT, [_lock_channel(c) for c in channels])
    for r in repodata:
        lock.add_conda_package(ENVIRONMENT, plat, r)
    for name, value in sorted(pypi_pins.items()):
        if name in provides:
            continue
        version, location = _pin(name, value)
        lock.add_pypi_package(ENVIRONMENT, plat, name, version, location)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    lock.to_path(tmp)
    # The specs are not part of the format; a comment line keeps them for `--from-lock`.
    header = "# sitestack conda lock: specs = " + json.dumps(list(specs)) + "\n"
    tmp.write_text(header + tmp.read_text(encoding="utf-8"), encoding="utf-8")
    os.chmod(tmp, 0o644)  # exact, whatever a library caller's umask
    os.replace(tmp, path)


def _pin(name: str, value: str) -> tuple[str, str]:
    if "://" in value or value.startswith("/"):
        m = re.search(r"-(\d[^-]*)-", Path(urllib.parse.urlparse(value).path).name)
        return (m.group(1) if m else "0"), value
    return value, f"https://pypi.org/project/{name}/{value}/"


def add_pypi_to_lock(path: Path, pypi_pins: Mapping[str, str], provides: Iterable[str] = ()) -> None:
    """Add the PyPI layer's pins to a lock written before the layer was installed.

    rattler refuses to modify a LockFile read from disk, so the lock is written anew from
    its conda records, its existing pins and the new ones.
    """
    repodata, pins, channels, specs = read_lock_full(Path(path))
    skip = set(provides)
    pins.update({k: v for k, v in pypi_pins.items() if k not in skip})
    _write_lock(Path(path), repodata, channels, specs, pins, skip)


def _header(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    return first if first.startswith("# sitestack conda lock:") else ""


def read_lock_full(path: Path) -> tuple[list[Any], dict[str, str], tuple[str, ...], tuple[str, ...]]:
    rattler = load_rattler()
    if not path.is_file():
        raise UsageError(f"lock file {path} does not exist")
    try:
        lock = rattler.LockFile.from_path(path)
    except Exception as e:
        raise UsageError(f"{path} is not a conda lock file: {first_lines(str(e), 3).strip()}") from None
    env = lock.environment(ENVIRONMENT) or lock.default_environment()
    if env is None:
        raise UsageError(f"{path} has no '{ENVIRONMENT}' environment")
    here = str(rattler.Subdir.current())
    plat = next((p for p in env.platforms() if p.name == here), None)
    if plat is None:
        names = ", ".join(p.name for p in env.platforms())
        raise UsageError(f"{path} locks {names}, not this machine's platform {here}")
    repodata = env.conda_repodata_records_for_platform(plat) or []
    pins = {p.name: p.version for p in env.pypi_packages_for_platform(plat) or []}
    channels = tuple(str(c.url) if hasattr(c, "url") else str(c) for c in env.channels())
    specs: tuple[str, ...] = ()
    if h := _header(path):
        try:
            specs = tuple(json.loads(h.split("=", 1)[1]))
        except (ValueError, IndexError):
            specs = ()
    return repodata, pins, channels, specs


def read_lock(path: Path) -> tuple[tuple[CondaRecord, ...], dict[str, str]]:
    """(conda records, {pypi name: version}) of a lock written by write_lock."""
    repodata, pins, _channels, _specs = read_lock_full(Path(path))
    return to_records(repodata), pins
