"""`conda create --clone base|PATH (--prefix P | -p P | -n NAME)`: a `sitestack clone`.

The source is the loaded stack (``base``) or a stack's prefix; the destination a path or a
NAME in the user's envs folder (envs.py). Missing parent folders are made, as conda makes
them; an existing destination is refused unless ``--force`` (which, as for `sitestack clone`,
replaces only an earlier clone or an empty folder). The clone is then listed in
~/.conda/environments.txt, so `conda env list` shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sitestack.core.records import StackRecord
from sitestack.errors import NotFoundError, UsageError
from sitestack.user.clone import CloneResult, clone
from sitestack.user.condafront.envs import (
    clone_info,
    envs_dirs,
    expand,
    loaded_stack,
    name_path,
    need_stack,
    remember,
)


@dataclass(frozen=True)
class Created:
    result: CloneResult
    activate_as: str  # what `conda activate` takes for it: NAME with -n, else the path


def source_stack(source: str, env: Mapping[str, str]) -> StackRecord:
    """The stack `--clone SOURCE` names: base, or a stack's prefix."""
    from sitestack.site.registry import Site

    if source == "base":
        return need_stack(env)
    path = expand(source, env) if "/" in source or source.startswith(("~", ".")) else None
    if path is None:
        rec = loaded_stack(env)
        path = next((d / source for d in envs_dirs(env, rec) if (d / source).is_dir()), None)
        if path is None:
            raise NotFoundError(f"--clone {source}: no environment of that name; nothing was created",
                                hint="conda create --clone base -p DIR clones the loaded stack")
    rec = Site.from_prefix(path)
    if rec is not None:
        return rec
    if clone_info(path) is not None or (path / "pyvenv.cfg").is_file():
        raise UsageError(f"--clone {source}: {path} is a clone or layer of yours; only a stack can be "
                         "cloned here; nothing was created",
                         hint="conda create --clone base -p DIR, then install into that clone what you need")
    raise NotFoundError(f"--clone {source}: {path} is not a stack; nothing was created")


def create_clone(env: Mapping[str, str], source: str, *, prefix: str | None, name: str | None,
                 force: bool = False) -> Created:
    if (prefix is None) == (name is None):
        raise UsageError("conda create --clone needs one of --prefix/-p PATH or --name/-n NAME")
    rec = source_stack(source, env)
    dest = expand(prefix, env) if prefix is not None else name_path(str(name), env, loaded_stack(env))
    result = clone(rec, Path(dest), force=force)
    remember(env, result.prefix)
    return Created(result, name if name is not None else str(result.prefix))
