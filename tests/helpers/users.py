"""A real unprivileged test user, and running commands as that user.

The tests run as root; published stacks must be usable (and read-only) for ordinary users, so
some tests drop to an unprivileged account created here with ``useradd -m``.

Things to remember:
- ``/root`` is mode 700, so this user cannot run a pyenv python under ``/root/.pyenv``: use
  :func:`debian_python` (``/usr/bin/python3.11``) for anything it must run itself.
- pytest's ``tmp_path`` lives under ``/tmp/pytest-of-root`` (mode 700): give the user a folder
  of its own with :func:`make_user_dir`, or open a tree up with :func:`share_with_users`.
- Commands run through ``setpriv ... -- /usr/bin/env -- ARGV`` with exactly the environment
  passed in (nothing of the caller's leaks through; ``runuser``/``su`` would rewrite HOME,
  SHELL and friends). See :func:`setpriv_argv` for why ``env`` sits in between.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_USER = "sstest"
DEBIAN_PYTHON = "/usr/bin/python3.11"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class TestUser:
    __test__ = False  # not a pytest test class

    name: str
    uid: int
    gid: int
    home: Path


def _from_pwd(pw: pwd.struct_passwd) -> TestUser:
    return TestUser(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates and switches to an unprivileged test user)")


def ensure_user(name: str = DEFAULT_USER) -> TestUser:
    """Create (once) and return the unprivileged user *name*; ``pytest.skip`` if not root."""
    require_root()
    try:
        return _from_pwd(pwd.getpwnam(name))
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("useradd not found; run scripts/install-test-deps.sh")
    r = subprocess.run(
        ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # another test process may have won the race: trust the passwd database
        return _from_pwd(pwd.getpwnam(name))
    except KeyError:
        raise RuntimeError(f"useradd {name} failed ({r.returncode}): {r.stderr.strip()}") from None


def _user(user: str | TestUser) -> TestUser:
    return user if isinstance(user, TestUser) else _from_pwd(pwd.getpwnam(user))


def user_env(user: str | TestUser, env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """A clean environment for *user*: PATH, HOME, USER, LOGNAME, LANG; *env* on top
    (None removes a variable)."""
    u = _user(user)
    out = {
        "PATH": BASE_PATH,
        "HOME": str(u.home),
        "USER": u.name,
        "LOGNAME": u.name,
        "LANG": "C.UTF-8",
    }
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def setpriv_argv(user: str | TestUser, argv: Sequence[str]) -> list[str]:
    """*argv* wrapped so that it runs as *user* (uid, gid and supplementary groups).

    setpriv keeps root's capabilities across its uid switch until its own execve, so the
    program it execs directly is looked up with root's CAP_DAC_OVERRIDE: ``setpriv --reuid=U
    -- /root/x`` runs /root/x even though U cannot enter /root. Hence the ``/usr/bin/env``
    step: env starts with no capabilities and execs *argv* exactly as the user would.
    """
    u = _user(user)
    return [
        "setpriv",
        f"--reuid={u.uid}",
        f"--regid={u.gid}",
        "--init-groups",
        "--",
        "/usr/bin/env",
        "--",
        *argv,
    ]


def run_as(
    user: str | TestUser,
    argv: Sequence[str],
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run *argv* as *user* with :func:`user_env` (*env* on top), in *cwd* (default: the
    user's home). Output is captured as text."""
    require_root()
    u = _user(user)
    r = subprocess.run(
        setpriv_argv(u, argv),
        env=user_env(u, env),
        cwd=str(u.home) if cwd is None else cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"{argv!r} as {u.name} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )
    return r


def debian_python() -> str:
    """Debian's python3.11, which any user can run (``pytest.skip`` if it is missing)."""
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        pytest.skip(f"{DEBIAN_PYTHON} missing; run scripts/install-test-deps.sh")
    return DEBIAN_PYTHON


def make_user_dir(user: str | TestUser, *, prefix: str = "sitestack-user-") -> Path:
    """A fresh folder in /tmp owned by *user* (mode 755). The caller removes it."""
    u = _user(user)
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chown(d, u.uid, u.gid)
    os.chmod(d, 0o755)
    return d


def share_with_users(path: str | os.PathLike[str]) -> None:
    """Let every user read *path* (recursively, a+rX) and traverse each of its ancestors (o+x).

    Handy for pytest's tmp_path; pytest resets its base folder to 700 at its next session.
    """
    p = Path(path).resolve()
    for parent in reversed(p.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o001)
    subprocess.run(["chmod", "-R", "a+rX", str(p)], check=True)
