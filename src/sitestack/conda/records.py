"""What conda stacks record: the solved packages, the lock's environment, and py-rattler.

py-rattler is imported lazily (``load_rattler``): only conda stacks need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitestack import __version__
from sitestack.errors import ToolMissingError

LOCK_NAME = "conda.lock"  # in PREFIX/.sitestack/: rattler's LockFile (the pixi.lock format)
ENVIRONMENT = "default"


@dataclass(frozen=True)
class CondaRecord:
    name: str
    version: str
    build: str
    subdir: str
    url: str
    sha256: str
    md5: str
    channel: str

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name, "version": self.version, "build": self.build, "subdir": self.subdir,
            "url": self.url, "sha256": self.sha256, "md5": self.md5, "channel": self.channel,
        }


@dataclass(frozen=True)
class CondaResult:
    python_exe: str  # relative to the prefix, e.g. "bin/python3.11"
    python_version: str  # x.y.z
    records: tuple[CondaRecord, ...]
    provides: frozenset[str]  # canonical names of Python distributions the conda packages installed
    provided_versions: Mapping[str, str]  # {canonical name: version}
    channels: tuple[str, ...]
    specs: tuple[str, ...]
    platform: str
    repodata: tuple[Any, ...] = field(default=(), compare=False, repr=False)  # RepoDataRecords

    @property
    def python_xy(self) -> str:
        return ".".join(self.python_version.split(".")[:2])

    def stack_json(self) -> dict[str, object]:
        """What stack.json records about the conda part (merged in by the build)."""
        return {
            "conda": {
                "channels": list(self.channels),
                "specs": list(self.specs),
                "platform": self.platform,
                "packages": [r.to_json() for r in self.records],
                "lock": f".sitestack/{LOCK_NAME}",
                "python_dists": dict(sorted(self.provided_versions.items())),
            },
            "conda_provides": sorted(self.provides),
        }


def load_rattler() -> Any:
    try:
        import rattler
    except ImportError:
        raise ToolMissingError(
            "conda stacks need py-rattler (pip install 'sitestack[conda]' or pip install py-rattler)"
        ) from None
    return rattler


def first_lines(text: str, n: int = 12) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return "\n".join("  " + ln for ln in lines[:n])



def hex_digest(b: bytes | None) -> str:
    return b.hex() if b else ""


def to_records(repodata: Iterable[Any]) -> tuple[CondaRecord, ...]:
    out = [
        CondaRecord(
            name=r.name.normalized, version=str(r.version), build=str(r.build),
            subdir=str(r.subdir), url=str(r.url), sha256=hex_digest(r.sha256), md5=hex_digest(r.md5),
            channel=str(r.channel or ""),
        )
        for r in repodata
    ]
    return tuple(sorted(out, key=lambda r: r.name))


HISTORY = "conda-meta/history"


def append_history(prefix: Path, command: str, added: Iterable[str], removed: Iterable[str],
                   specs: Iterable[str], *, remove: bool = False) -> None:
    """One entry of conda's PREFIX/conda-meta/history, as conda writes it for each change."""
    import time

    lines = [f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} <==", f"# cmd: {command}",
             f"# conda version: sitestack {__version__}"]
    lines += [f"-{r}" for r in removed] + [f"+{a}" for a in added]
    lines.append(f"# {'remove' if remove else 'update'} specs: {list(specs)!r}")
    path = Path(prefix) / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
