"""The one environment tests hand to sitestack, pip, uv and the stacks' pythons.

This machine (and a developer's) sets PIP_*/UV_* globally, a loaded module sets SITESTACK_*,
an active venv sets VIRTUAL_ENV, and PYTHON* variables change what an interpreter sees:
none of that may leak into a test. (tests/helpers/modules.clean_env is different: it builds
a minimal login-like environment from nothing, for module scripts.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DROP = ("PIP_", "UV_", "SITESTACK_", "VIRTUAL_ENV", "PYTHON")


def clean_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (default: this process's environment) without DROP, then `extra` on top.

    pip still reads config files: a stack's own pip.conf (user installs by default) is part
    of what tests check."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(DROP)}
    env.update(extra)
    return env


def offline_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """clean_env, and pip and uv read no config file at all (for tests that run pip/uv
    directly and must not see this machine's index settings)."""
    return clean_env(base, **{"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                              "UV_NO_CONFIG": "1", **extra})
