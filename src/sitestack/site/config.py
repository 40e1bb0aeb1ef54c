"""Site settings in ``ROOT/.sitestack/config.json`` (``sitestack config KEY VALUE``).

Settings are few and each is validated here, so a typo in a key is an error, not a silent
no-op: ``catalog``, the folder that every build, default, deprecate, hide and retire rewrites
(see site/catalog.py); ``stage_mount_helper``, a setuid program with which `stage --mount`
mounts images for users with the kernel (see scale/mount.py); ``conda_envs_dir``, where the
conda front door's `create -n NAME` puts clones (user/condafront/envs.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sitestack.core.layout import SiteRoot
from sitestack.errors import UsageError

CONFIG_JSON = "config.json"

# key -> what it means (shown by `sitestack config`).
KEYS: dict[str, str] = {
    "catalog": "folder of the static catalog site, rewritten after every change to the site",
    "stage_mount_helper": "setuid program that mounts a staged image for users (HELPER IMAGE DIR; "
                          "HELPER -u [-z] DIR unmounts)",
    "conda_envs_dir": "where `conda create -n NAME` puts a user's clone (default ~/.conda/envs; "
                      "~, $HOME and $USER are the user's)",
}


def config_file(root: SiteRoot) -> Path:
    return root.meta / CONFIG_JSON


def read_config(root: SiteRoot) -> dict[str, Any]:
    try:
        data = json.loads(config_file(root).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {config_file(root)}: {e}") from None
    return data if isinstance(data, dict) else {}


def set_config(root: SiteRoot, key: str, value: str | None) -> dict[str, Any]:
    """Set (or with None, remove) one key under the state lock; return the whole config."""
    from sitestack.core.fsutil import atomic_write_json, file_lock, make_dirs

    if key not in KEYS:
        raise UsageError(f"unknown setting {key!r}", hint="known settings: " + ", ".join(sorted(KEYS)))
    if value is not None and key == "catalog":
        if not value.strip():
            raise UsageError("catalog: give a folder (or --unset)")
        value = str(check_catalog_dir(root, Path(value)))
    if value is not None and key == "stage_mount_helper" and not (
            os.path.isabs(value) and os.path.isfile(value) and os.access(value, os.X_OK)):
        raise UsageError(f"stage_mount_helper: {value} is not an executable file's absolute path")
    if value is not None and key == "conda_envs_dir" and (
            not value.startswith(("/", "~/", "$HOME/", "${HOME}/")) or any(ord(c) < 32 for c in value)):
        raise UsageError(f"conda_envs_dir: {value!r} is not an absolute path or one under ~ or $HOME")
    if not root.path.is_dir():
        raise UsageError(f"site root {root.path} does not exist")
    make_dirs(root.locks)  # exact modes, whatever the caller's umask
    with file_lock(root.state_lock, what=f"site root {root.path}"):
        data = read_config(root)
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
        atomic_write_json(config_file(root), data)
    return data


def check_catalog_dir(root: SiteRoot, out: Path) -> Path:
    """The absolute catalog folder, refused where replacing it wholesale would hurt the site."""
    out = Path(os.path.abspath(os.path.expanduser(out)))
    managed = (root.stacks, root.lmod_dir, root.tcl_dir, root.meta, root.path / "archives")
    if out == root.path or out in root.path.parents or any(out == m or m in out.parents for m in managed):
        # The catalog folder is replaced as a whole on every rewrite.
        raise UsageError(f"catalog folder {out} would replace part of the site root {root.path}",
                         hint="choose a folder of its own, e.g. ROOT/catalog or /var/www/python")
    return out


def catalog_dir(root: SiteRoot) -> Path | None:
    value = read_config(root).get("catalog")
    return Path(value) if isinstance(value, str) and value else None


def mount_helper(root: SiteRoot) -> str | None:
    value = read_config(root).get("stage_mount_helper")
    return value if isinstance(value, str) and os.path.isabs(value) else None
