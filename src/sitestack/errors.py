"""One exception hierarchy; each class carries the exit code the CLI returns.

Every error class lives here, and docs/exit-codes.md lists each one under its code
(tests/test_exit_codes.py keeps the two in step). The codes:
  0 ok
  1 a check found problems (check, doctor, verify) -- not an exception
  2 bad input: spec, arguments, unknown stack or path  (UsageError and subclasses)
  3 a build step failed (resolution, install, interpreter copy, writing an archive)
  4 a smoke test failed; nothing was published
  5 the site root or a target is locked, exists, or is not writable
  6 verification failed: a checksum or a staged copy does not match
  7 a required external tool is missing (uv, patchelf, mpiexec, ...)
  130 interrupted (Ctrl-C) -- not an exception
"""

from __future__ import annotations


class SitestackError(Exception):
    """Base class: a message meant for a human, one line where possible."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SitestackError):
    """Bad input from the command line: a path that is not a venv, on/off, ..."""

    exit_code = 2


class SpecError(UsageError):
    """A stack spec that does not parse or validate. Names the key."""

    def __init__(self, key: str, problem: str, *, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        # A key is the spec's own text: one with a line break (FOO\n) is shown quoted, so the
        # error stays one line.
        shown = key if key.isprintable() else repr(key)
        super().__init__(f"{where}{shown}: {problem}")
        self.key = key
        self.problem = problem


class NotFoundError(UsageError):
    """A stack, version or layer that does not exist."""


class BuildError(SitestackError):
    """A build step failed: resolution, install, interpreter copy, bytecode."""

    exit_code = 3


class SmokeTestError(BuildError):
    """A smoke test failed; nothing was published."""

    exit_code = 4


class ConflictError(SitestackError):
    """Something already exists, is locked, or cannot be written."""

    exit_code = 5


class VerifyError(SitestackError):
    """A checksum does not match, or an archive is unsafe."""

    exit_code = 6


class ArchiveError(BuildError):
    """Writing an archive failed: the external archiver (mksquashfs) exited with an error."""


class ToolMissingError(SitestackError):
    """An external program the command needs is not installed."""

    exit_code = 7


class StageError(SitestackError):
    """Staging failed on some rank or node. Every rank raises it with the same code, that of
    the failure behind it (one of the codes above), so mpiexec sees one exit status."""

    exit_code = VerifyError.exit_code

    def __init__(self, message: str, code: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        if code is not None:
            self.exit_code = code
