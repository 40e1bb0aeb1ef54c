"""A layer's record of what the user asked `sitestack install` for: LAYER/.sitestack/requested.json.

`rebase` reads it to know the layer's own packages: a requirement the old stack satisfied
left nothing in the layer's site-packages, yet the layer still needs it on a stack without it.
"""

from __future__ import annotations

import json
import os
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
    """The record, or an empty one when the layer has none; the one reader of it.

    Anything but what `write` writes is one UsageError line (exit 2) naming the file and the
    key, before anything is changed: a folder, not JSON, a string where a list belongs (it
    would be read character by character), an entry that is not a requirement (an option
    such as `--find-links=/x` would reach uv's request file as an option), a shadow entry
    that is not a canonical distribution name.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    from sitestack.core.shape import Shape
    from sitestack.errors import UsageError

    path = record_path(layer)
    if not os.path.lexists(path):
        return Requested()
    shape = Shape(str(path), UsageError, hint="fix or remove it: it lists what `sitestack install` was asked for")
    data = shape.table(shape.json_file(path))
    reqs = shape.texts(data.get("requirements", []), "requirements")
    for i, r in enumerate(reqs):
        try:
            Requirement(r)
        except InvalidRequirement:
            shape.fail(f"requirements[{i}]: {r!r} is not a requirement")
    shadow = shape.texts(data.get("shadow", []), "shadow")
    for i, n in enumerate(shadow):
        if canonicalize_name(n) != n:
            shape.fail(f"shadow[{i}]: {n!r} is not a canonical distribution name")
    return Requested(reqs, shadow)


def req_name(req: str) -> str:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(Requirement(req).name))


def merged(old: Requested, reqs: list[str], shadow: list[str]) -> Requested:
    """`old` with `reqs` added; a new requirement replaces an older one of the same name."""
    new_names = {req_name(r) for r in reqs}
    kept = [r for r in old.requirements if req_name(r) not in new_names]
    return Requested(tuple(kept + reqs), tuple(sorted(set(old.shadow) | set(shadow))))


def write(layer: Path, rec: Requested) -> None:
    from sitestack.core.fsutil import atomic_write_text

    atomic_write_text(record_path(layer), json.dumps(rec.to_json(), indent=2) + "\n")
