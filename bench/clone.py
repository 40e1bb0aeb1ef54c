"""Benchmark: `sitestack clone` against cp -a, cp -al and uv venv + uv pip install.

Builds one stack from PyPI (numpy, scipy, pandas, matplotlib, scikit-learn) with
`sitestack build` into a temp root, then times every method in the same run on the same
warm page cache, and prints seconds, ratios to `cp -a`, extra disk and inodes used.

    python bench/clone.py [--repeat 3] [--dir /tmp] [--loop] [--user sstest]

--loop  (root) also runs on private loop-mounted ext4 and XFS (reflink=1) images: steadier
        figures, and the only place reflink and exact extra disk (statvfs) can be measured
--user  also times a non-owner (that user, via setpriv) cloning root's read-only stack
Needs network (PyPI) for the build; everything after that is local.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PACKAGES = ["numpy", "scipy", "pandas", "matplotlib", "scikit-learn"]
SRC = Path(__file__).resolve().parents[1] / "src"


def sh(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def used(path: Path) -> tuple[int, int]:
    """(bytes, inodes) in use on path's filesystem, after the kernel wrote everything out."""
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree


def own_usage(dest: Path, stack_inodes: set[tuple[int, int]]) -> tuple[int, int]:
    """(bytes, inodes) a copy adds, counting inodes it shares with the stack as free.

    For the shared host filesystem, where statvfs also sees other people's writes.
    Does not see shared extents (reflink): reflink is measured on a private XFS.
    """
    nbytes = inodes = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames + [""]:
            st = os.lstat(os.path.join(dirpath, name)) if name else os.lstat(dirpath)
            key = (st.st_dev, st.st_ino)
            if name in dirnames and not os.path.islink(os.path.join(dirpath, name)):
                continue  # folders are counted once, as dirpath
            if key in seen or key in stack_inodes:
                continue
            seen.add(key)
            inodes += 1
            nbytes += st.st_blocks * 512
    return nbytes, inodes


def inode_set(root: Path) -> set[tuple[int, int]]:
    out = set()
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out.add((st.st_dev, st.st_ino))
    return out


def rm(path: Path) -> None:
    if os.path.lexists(path):
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
        shutil.rmtree(path)


def build_stack(root: Path, python: str) -> Path:
    spec = root.parent / "bench-spec.toml"
    reqs = ", ".join(f'"{p}"' for p in PACKAGES)
    spec.write_text(f'[stack]\nname = "bench"\npython = "{python}"\nsite = "bench"\n\n'
                    f"[packages]\nrequirements = [{reqs}]\n\n[tests]\nimports = [\"numpy\", \"sklearn\"]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    t0 = time.monotonic()
    sh([sys.executable, "-m", "sitestack", "--root", str(root), "build", str(spec), "--version", "1"],
       env=env | {"PYTHONPATH": str(SRC)})
    print(f"# built the stack in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return root / "stacks" / "bench" / "1"


Method = Callable[[Path], list[str]]


class Ctx:
    def __init__(self, dest_dir: Path, stack: Path, private_fs: bool) -> None:
        self.dest_dir, self.private_fs = dest_dir, private_fs
        self.stack_inodes = set() if private_fs else inode_set(stack)


def measure(name: str, argv_for: Method, ctx: Ctx, repeat: int, results: dict[str, dict[str, float]],
            wrap: Callable[[list[str]], list[str]] = lambda a: a, env: dict[str, str] | None = None) -> None:
    times = []
    extra = inodes = 0
    for i in range(repeat):
        dest = ctx.dest_dir / f"{''.join(c if c.isalnum() else '_' for c in name)}-{i}"
        rm(dest)
        b0, i0 = used(ctx.dest_dir)  # also: no dirty pages left from the last run
        t0 = time.perf_counter()
        r = subprocess.run(wrap(argv_for(dest)), capture_output=True, text=True, env=env)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            print(f"# {name} failed: {r.stderr.strip()[-400:]}", file=sys.stderr)
            return
        b1, i1 = used(ctx.dest_dir)
        times.append(dt)
        extra, inodes = (b1 - b0, i1 - i0) if ctx.private_fs else own_usage(dest, ctx.stack_inodes)
        rm(dest)
    results[name] = {"seconds": statistics.median(times), "best": min(times), "extra_bytes": extra,
                     "inodes": inodes}


def uv_method(stack: Path, py: str) -> Method:
    from sitestack.core.uvtool import uv_bin

    lock = stack / ".sitestack" / "lock.txt"

    def argv(dest: Path) -> list[str]:
        uv = uv_bin()
        return ["bash", "-c", f"{uv} venv -q -p {stack}/bin/{py} {dest} && "
                f"{uv} pip install -q --python {dest}/bin/python -r {lock}"]

    return argv


def report(results: dict[str, dict[str, float]], stack_bytes: int, stack_files: int, title: str) -> None:
    base = results.get("cp -a", {}).get("seconds")
    print(f"\n## {title}\nstack: {stack_bytes / 2**20:.0f} MiB, {stack_files} files\n")
    print("| method | seconds (median) | best | vs cp -a | extra disk | % of stack | inodes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        ratio = f"{base / r['seconds']:.1f}x" if base else "-"
        print(f"| {name} | {r['seconds']:.3f} | {r['best']:.3f} | {ratio} | {r['extra_bytes'] / 2**20:.1f} MiB "
              f"| {100 * r['extra_bytes'] / stack_bytes:.1f}% | {int(r['inodes'])} |")


def clone_argv(root: Path, mode: str, python: str = sys.executable) -> Method:
    return lambda d: [python, "-m", "sitestack", "--root", str(root), "clone", "bench/1",
                      "--prefix", str(d), "--mode", mode]


def run_suite(root: Path, stack: Path, work: Path, repeat: int, user: str | None, fs: str,
              private_fs: bool) -> None:
    rec = json.loads((stack / ".sitestack" / "stack.json").read_text())
    py = f"python{rec['python_xy']}"
    res: dict[str, dict[str, float]] = {}
    ctx = Ctx(work, stack, private_fs)
    measure("cp -a", lambda d: ["cp", "-a", str(stack), str(d)], ctx, repeat, res)
    if fs.startswith("xfs"):
        measure("cp -a --reflink=never", lambda d: ["cp", "-a", "--reflink=never", str(stack), str(d)],
                ctx, repeat, res)
    measure("cp -al", lambda d: ["cp", "-al", str(stack), str(d)], ctx, repeat, res)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    for mode in (["reflink"] if fs.startswith("xfs") else []) + ["hardlink", "copy", "thin"]:
        measure(f"sitestack clone --mode {mode}", clone_argv(root, mode), ctx, repeat, res, env=env)
    measure("uv venv + uv pip install (warm cache)", uv_method(stack, py), ctx, repeat, res)
    if user:
        pw = pwd.getpwnam(user)
        uwork = Path(tempfile.mkdtemp(dir=work))
        os.chown(uwork, pw.pw_uid, pw.pw_gid)
        os.chmod(work, 0o755)
        wrap = lambda a: ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--", *a]  # noqa: E731
        uenv = {"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir, "PYTHONPATH": str(SRC), "LANG": "C.UTF-8"}
        ures: dict[str, dict[str, float]] = {}
        uctx = Ctx(uwork, stack, private_fs)
        measure("cp -a", lambda d: ["cp", "-a", str(stack), str(d)], uctx, repeat, ures, wrap, uenv)
        measure("sitestack clone (auto -> copy)", clone_argv(root, "auto", "/usr/bin/python3.11"), uctx, repeat,
                ures, wrap, uenv)
        measure("sitestack clone --mode thin", clone_argv(root, "thin", "/usr/bin/python3.11"), uctx, repeat,
                ures, wrap, uenv)
        report(ures, rec["bytes"], rec["files"], f"non-owner ({user}) on {fs}")
        rm(uwork)
    report(res, rec["bytes"], rec["files"], f"owner (root) on {fs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp", help="where the temp root goes (ext4 here)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop", action="store_true",
                    help="(root) also run on private loop-mounted ext4 and XFS (reflink=1) images")
    ap.add_argument("--user", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(SRC))
    work = Path(tempfile.mkdtemp(prefix="sitestack-bench-", dir=a.dir))
    os.chmod(work, 0o755)
    mounts: list[Path] = []
    try:
        root = work / "site"
        stack = build_stack(root, a.python)
        print(f"# {os.uname().release}, {os.cpu_count()} cpus; {shutil.which('cp')} "
              f"{sh(['cp', '--version']).stdout.splitlines()[0]}", file=sys.stderr)
        fs = sh(["stat", "-f", "-c", "%T", str(work)]).stdout.strip()
        run_suite(root, stack, work, a.repeat, a.user, f"{fs} (host {a.dir}, shared with other work)", False)
        for kind in (["ext4", "xfs"] if a.loop else []):
            img, mnt = work / f"{kind}.img", work / kind
            mnt.mkdir()
            mounts.append(mnt)
            with open(img, "wb") as f:
                f.truncate(4 << 30)
            sh(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)] if kind == "xfs" else ["mkfs.ext4", "-q", str(img)])
            sh(["mount", "-o", "loop", str(img), str(mnt)])
            os.chmod(mnt, 0o755)
            lroot = mnt / "site"
            run_suite(lroot, build_stack(lroot, a.python), mnt, a.repeat, a.user, f"{kind} (private loop mount)",
                      True)
    finally:
        for m in mounts:
            subprocess.run(["umount", "-l", str(m)], check=False)
        if not a.keep:
            rm(work)


if __name__ == "__main__":
    main()
