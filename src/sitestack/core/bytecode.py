"""The one bytecode compiler: `compileall` run by the tree's own interpreter.

Build, the package cache, clone and stage all compile through ``compile_paths``: the
interpreter that will import the files writes their bytecode (right magic number and
cache tag, whatever Python runs sitestack), and ``strip``/``prepend`` record the final
path in the .pyc although the files sit in a temp folder.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from sitestack import TYPE_CHECKING
from sitestack.errors import BuildError

if TYPE_CHECKING:
    import subprocess

    from sitestack.core.log import LogSink
    from sitestack.core.progress import Progress


# Run by the tree's own python (-I: not even its cwd on sys.path): compileall's command line,
# `-q -j 0 [-f] [-s S -p P] [-x RX] PATHS`, with the same compileall.compile_file for each
# file, plus one count line per batch on fd FD for the caller's progress. Folders are walked
# as compileall walks them (sorted, __pycache__ and symlinked folders skipped) and compiled on
# all cores; files given by name in this process, one after another, as compileall does.
_CHILD = r"""
import compileall, functools, json, os, re, sys
opts = json.loads(sys.argv[1])
fd = opts["fd"]
report = os.fdopen(fd, "w", buffering=1) if fd >= 0 else None
rx = re.compile(opts["exclude"]) if opts["exclude"] else None
def walk(d, levels):
    try:
        names = sorted(os.listdir(d))
    except OSError:
        print("Can't list %r" % d)
        return
    for name in names:
        if name == "__pycache__":
            continue
        full = os.path.join(d, name)
        if not os.path.isdir(full):
            yield full
        elif levels > 0 and not os.path.islink(full):
            yield from walk(full, levels - 1)
def wanted(f):  # what compile_file would compile: a .py the -x regex does not match
    return f.endswith(".py") and not (rx and rx.search(f))
pool, alone = [], []
for dest in sys.argv[2:]:
    if os.path.isfile(dest):
        alone.append(dest)
    else:
        pool += [f for f in walk(dest, sys.getrecursionlimit()) if wanted(f)]
alone_n = sum(1 for f in alone if wanted(f))
if report:
    report.write("total %d\n" % (len(pool) + alone_n))
one = functools.partial(compileall.compile_file, force=opts["force"], rx=rx, quiet=1,
                        stripdir=opts["strip"], prependdir=opts["prepend"])
ok, done, batch = True, 0, 64
def count(n):
    if report and n:
        report.write("%d\n" % n)
executor = None
if pool:
    try:
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import _check_system_limits
        _check_system_limits()
        executor = ProcessPoolExecutor()
    except (ImportError, NotImplementedError, OSError):
        executor = None
results = executor.map(one, pool, chunksize=max(1, min(batch, len(pool) // 64))) if executor else map(one, pool)
for r in results:
    ok = bool(r) and ok
    done += 1
    if done % batch == 0:
        count(batch)
count(done % batch)
if executor:
    executor.shutdown()
done = 0
for f in alone:
    ok = bool(one(f)) and ok
    if wanted(f):
        done += 1
        if done % batch == 0:
            count(batch)
count(done % batch)
sys.exit(0 if ok else 1)
"""


def compile_paths(python: str, paths: Sequence[str], *, strip: str | None = None,
                  prepend: str | None = None, force: bool = False,
                  exclude: str | None = None, progress: Progress | None = None) -> subprocess.CompletedProcess[str]:
    """compileall over files and folders (folders on all cores); never raises for compile
    errors: it exits 1 when a file fails, 0 when all compiled.

    Timestamp-checked .pyc (not hash-based): SOURCE_DATE_EPOCH would switch compileall to
    checked hashes, so it is dropped, as is a PYTHONPYCACHEPREFIX that would put the
    bytecode elsewhere. `exclude` is compileall's -x regex: files it matches are not even
    checked (the build skips site-packages that came compiled from the package cache).
    With `progress`, its total becomes the number of .py files to check and it advances as
    the child reports batches (one line per 64 files, on a pipe of its own: compile errors
    and warnings keep stdout and stderr to themselves).
    """
    # Here, not at import: pyc_paths alone serves clone, whose start-up is benchmarked.
    import subprocess
    import tempfile

    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONPYCACHEPREFIX")}
    env["PYTHONNOUSERSITE"] = "1"
    opts: dict[str, object] = {"force": force, "strip": strip if strip and prepend else None,
                               "prepend": prepend if strip and prepend else None, "exclude": exclude, "fd": -1}
    if progress is None:
        return subprocess.run([python, "-I", "-c", _CHILD, json.dumps(opts), *paths],
                              capture_output=True, text=True, env=env)
    r, w = os.pipe()
    opts["fd"] = w
    cmd = [python, "-I", "-c", _CHILD, json.dumps(opts), *paths]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, pass_fds=(w,))
        finally:
            os.close(w)
        try:
            with os.fdopen(r, encoding="ascii", errors="replace") as counts:
                for line in counts:
                    if line.startswith("total "):
                        progress.set_total(int(line.split()[1]))
                    elif line.strip().isdigit() and int(line):
                        progress.advance(int(line))
        finally:
            if proc.poll() is None and sys.exc_info()[0] is not None:
                proc.kill()
            rc = proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, rc, out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace"))


def compile_dirs(python: str, dirs: Sequence[str], log: LogSink, *, strip: str | None = None,
                 prepend: str | None = None, exclude: str | None = None,
                 progress: Progress | None = None) -> None:
    """Compile every .py under `dirs` (those that exist); BuildError if compileall crashed.
    `progress` (a core.progress.Progress) counts the files as they are done."""
    dirs = [d for d in dirs if os.path.isdir(d)]
    if not dirs:
        return
    r = compile_paths(python, dirs, strip=strip, prepend=prepend, exclude=exclude, progress=progress)
    log.add(r.stdout + r.stderr)
    # compileall exits 1 when any file fails (e.g. templates with py2 syntax): keep going,
    # but fail if it crashed outright.
    if r.returncode not in (0, 1):
        raise BuildError(f"compiling bytecode failed: {r.stderr.strip()[-500:]}")


def pyc_paths(rel: str, py_xy: str) -> tuple[str, ...]:
    """The bytecode files CPython X.Y writes for the source `rel` (plain, -O, -OO)."""
    d, name = os.path.split(rel)
    base = os.path.join(d, "__pycache__", f"{name[:-3]}.cpython-{py_xy.replace('.', '')}")
    return (f"{base}.pyc", f"{base}.opt-1.pyc", f"{base}.opt-2.pyc")
