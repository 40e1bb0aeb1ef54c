"""Which sitestack the site's users run: ``ROOT/.sitestack/tool.json`` names one folder of
``ROOT/.sitestack/tools/`` (written by build/sitetool.py), whose ``bin/`` the modulefiles put on
PATH with ``sitestack`` and the ``conda`` front door in it.

The record is read back from disk, so it is not trusted: it must be a JSON object whose
``id`` is one plain folder name under ``tools/``, a real folder (no symlink out) holding both
commands. Anything else reads as "no tool" and the modulefiles go without one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from sitestack.core.layout import SiteRoot

TOOL_JSON = "tool.json"  # in ROOT/.sitestack/ (the current one) and in each tool folder
COMMANDS = ("sitestack", "conda")
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


def current_tool(root: SiteRoot) -> Path | None:
    """The current tool folder, or None when the root has none (or a record of another shape)."""
    try:
        data = json.loads(root.tool_record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ident = data.get("id") if isinstance(data, dict) else None
    if not isinstance(ident, str) or not _ID.fullmatch(ident):
        return None
    path = root.tools / ident
    if os.path.islink(path) or not path.is_dir():
        return None
    for name in COMMANDS:
        cmd = path / "bin" / name
        if os.path.islink(cmd) or not cmd.is_file():
            return None
    return path


def tool_bin(root: SiteRoot) -> str:
    """The bin folder the modulefiles put on PATH ("" without a tool)."""
    path = current_tool(root)
    return str(path / "bin") if path is not None else ""
