"""A layer's record of what the user asked `sitestack install` for: LAYER/.sitestack/requested.json.

`rebase` reads it to know the layer's own packages: a requirement the old stack satisfied
left nothing in the layer's site-packages, yet the layer still needs it on a stack without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sitestack.core.layout import records_dir
from sitestack.core.records import LAYER_REQUESTED


@dataclass(frozen=True)
class Requested:
    requirements: tuple[str, ...] = ()  # as the user gave them; one per distribution, newest wins
    shadow: tuple[str, ...] = ()  # canonical names the user allowed into the layer over the stack

    def to_json(self) -> dict[str, list[str]]:
        return {"requirements": list(self.requirements), "shadow": list(self.shadow)}


def record_path(layer: Path) -> Path:
    return records_dir(layer) / LAYER_REQUESTED


def read(layer: Path) -> Requested:
    """The record, or an empty one when the layer has none (or an unreadable one)."""
    try:
        data = json.loads(record_path(layer).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Requested()
    if not isinstance(data, dict):
        return Requested()
    reqs = [r for r in data.get("requirements", []) if isinstance(r, str)]
    shadow = [s for s in data.get("shadow", []) if isinstance(s, str)]
    return Requested(tuple(reqs), tuple(shadow))


def req_name(req: str) -> str:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(Requirement(req).name))


def merged(old: Requested, reqs: list[str], shadow: list[str]) -> Requested:
    """`old` with `reqs` added; a new requirement replaces an older one of the same name."""
    new_names = {req_name(r) for r in reqs}
    kept = [r for r in old.requirements if _safe_name(r) not in new_names]
    return Requested(tuple(kept + reqs), tuple(sorted(set(old.shadow) | set(shadow))))


def _safe_name(req: str) -> str | None:
    try:
        return req_name(req)
    except Exception:  # a hand-edited record: keep the line, it just never matches
        return None


def write(layer: Path, rec: Requested) -> None:
    from sitestack.core.fsutil import atomic_write_text

    atomic_write_text(record_path(layer), json.dumps(rec.to_json(), indent=2) + "\n")
