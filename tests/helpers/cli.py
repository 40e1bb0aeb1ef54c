"""Running the real `sitestack` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = False,
            cwd: str | os.PathLike[str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `sitestack` CLI in a subprocess."""
    full_env = dict(os.environ if env is None else env)
    r = subprocess.run([sys.executable, "-m", "sitestack", *args], capture_output=True, text=True,
                       env=full_env, cwd=cwd, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"sitestack {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def one_error(r: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a clean failure: exactly one `sitestack: error:` line (+ a hint), no traceback."""
    err = r.stderr
    assert "Traceback" not in err, err
    assert err.count("sitestack: error:") == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    first = next(i for i, ln in enumerate(lines) if ln.startswith("sitestack: error:"))
    assert all(ln.startswith("hint:") for ln in lines[first + 1:]), err
    return err
