"""Benchmark (network): a real stack from PyPI, each sitestack step timed beside its peer.

    python bench/realstack.py                                  # the small set: numpy scipy pandas matplotlib
    python bench/realstack.py --spec examples/polaris.toml     # the full 8 GiB ML stack

In one run, on one machine, caches as stated:
  - build, every cache cold (empty uv cache, new site root) vs `uv venv` + `uv pip install
    --compile-bytecode` with an empty uv cache of its own;
  - build, caches warm (a new dated version of the same set) vs the same uv run, uv cache warm;
  - `sitestack clone --mode hardlink` vs `cp -al` (and `cp -a` for scale);
  - `sitestack pack -o X.tar.zst --level 3` vs `tar -cf - . | zstd -3 -T0`.

Goals (issue 10): cold <= 1.3x, warm <= 0.6x, clone <= 1.0x `cp -al`, pack <= 1.0x tar|zstd.
Clone and pack run --repeat times, each side alternately, and report medians (single runs of
half a second move by +-50% on a shared machine); the load average is printed with each step.
`--cold-repeat N` runs N cold pairs (sitestack, then uv, each with new caches) and compares
their medians; `--builds-only` stops after the builds. pack hashes only the files whose
inode or ctime changed since a pack last found them to match (core/checked.py): the clones'
links and their removal give every inode a new ctime, so the first pack runs (within two
seconds of that, twice) hash every file and later ones none; the runs list shows both.

`--fresh-fs` (root) gives each side of each build pair a new ext4 filesystem of its own (a
sparse image on a loop device with direct I/O, unmounted and deleted after): on a disk
that has just freed tens of thousands of inodes (the previous pair's trees, a test run),
ext4's inode allocator skips every recently deleted inode (`recently_deleted` and
`find_inode_bit` led `perf record -a` of a uv run), and identical runs grew from 11 to 16
s, their system time from 5.6 to 12.7 s. On fresh filesystems both sides run at their
own speed. The clone and cp -al run on the stack's filesystem (they hardlink it).

sitestack runs the way users run it, from its own venv with this checkout installed, not
editable (`--tool-venv DIR` reuses one; by default one is made in the work folder), as
bench/venv.py does. `--baseline-venv DIR` adds another sitestack (e.g. installed from main)
to the clone and pack rounds, between the two sides, on the stack this one built.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import clean_env, report, timed, tool_venv  # noqa: E402

SMALL = ["numpy", "scipy", "pandas", "matplotlib"]


def cpu() -> float:
    """CPU seconds (user + system) of the children waited for so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", help="a stack spec (default: a spec of the small set)")
    ap.add_argument("--requirements", nargs="+", default=SMALL)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--work", help="work folder (default: a temp folder, removed after)")
    ap.add_argument("--level", type=int, default=3, help="zstd level for both packers")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each clone and pack side (median)")
    ap.add_argument("--cold-repeat", type=int, default=1,
                    help="cold builds of each side, alternating, each with new caches and site root (median)")
    ap.add_argument("--builds-only", action="store_true", help="skip the clone and pack steps")
    ap.add_argument("--fresh-fs", action="store_true",
                    help="each side of each build pair on a new ext4 filesystem (root; see above)")
    ap.add_argument("--fs-size", default="64G", help="size of each sparse filesystem image (--fresh-fs)")
    ap.add_argument("--tool-venv", help="a venv with sitestack installed (default: make one in the work folder)")
    ap.add_argument("--baseline-venv", help="another venv with sitestack installed (e.g. from main) whose clone "
                                            "and pack run in the same rounds, for before/after figures")
    args = ap.parse_args()
    py = args.python
    uv = shutil.which("uv") or "uv"  # only to make the tool venv; the peer runs the tool's own uv
    work = Path(args.work or tempfile.mkdtemp(prefix="sitestack-bench-real-"))
    work.mkdir(parents=True, exist_ok=True)
    mounts = contextlib.ExitStack()

    def side(label: str, stack: contextlib.ExitStack = mounts) -> Path:
        """Where one side's trees go: a new filesystem with --fresh-fs (unmounted when `stack`
        closes), else the work folder."""
        return stack.enter_context(fresh_fs(work / f"fs-{label}", args.fs_size)) if args.fresh_fs else work

    try:
        tool = Path(args.tool_venv) if args.tool_venv else tool_venv(work / "tool", uv, py)
        sitestack = [str(tool / "bin" / "sitestack")]
        # The peer runs the very uv binary sitestack runs (the tool venv's, from the pinned
        # wheel), not PATH's: here that is a pyenv shim, a bash script costing ~80 ms a call.
        uv = str(tool / "bin" / "uv")
        if args.spec:
            spec = Path(args.spec).resolve()
            from sitestack.site.spec import load_spec

            s = load_spec(spec)
            name, reqs = s.name, list(s.packages.requirements)
            build_opts = s.packages.build
        else:
            spec = work / "spec.toml"
            reqs = args.requirements
            spec.write_text(f'[stack]\nname = "real"\npython = "{py}"\n[packages]\nrequirements = '
                            + json.dumps(reqs) + '\n[tests]\nimports = ["numpy"]\n')
            name, build_opts = "real", {}
        fs_a, fs_b = side("sitestack"), side("uv")
        root = fs_a / "site"
        a_cache, b_cache = fs_a / "uvcache-sitestack", fs_b / "uvcache-uv"
        env_a, env_b = clean_env(UV_CACHE_DIR=str(a_cache)), clean_env(UV_CACHE_DIR=str(b_cache))
        no_binary = [x for n, o in sorted(build_opts.items()) if o.no_binary for x in ("--no-binary", n)]
        # The same environment variables the spec gives its source builds (e.g. MPICC).
        for o in build_opts.values():
            env_b.update(o.env)

        def build(version: str, at: Path = root, env: dict[str, str] = env_a) -> float:
            return timed([*sitestack, "build", str(spec), "--root", str(at), "--version", version],
                         env=env)

        # What uv itself needs for a package built without isolation (horovod imports torch in
        # its build): a second call, once the first has installed what that build imports.
        later = {n for n, o in build_opts.items() if not o.build_isolation}
        first = [r for r in reqs if _req_name(r) not in later]
        second = [r for r in reqs if _req_name(r) in later]

        def uv_run(dest: str, env: dict[str, str] = env_b, base: Path = fs_b) -> float:
            venv = base / dest
            install = (f"{uv} pip install -q --compile-bytecode --python {venv / 'bin' / 'python'} "
                       f"{' '.join(no_binary)} ")
            cmd = f"{uv} venv -q {venv} --python {py} && {install}" + " ".join(f"'{r}'" for r in first)
            if second:
                cmd += (f" && {install}" + " ".join(f"--no-build-isolation-package {n}" for n in sorted(later))
                        + " " + " ".join(f"'{r}'" for r in second))
            return timed(cmd, env=env, shell=True)

        def cold_pair(i: int) -> tuple[float, float]:
            """One more cold build of each side, each with new caches (and site root), then removed."""
            from sitestack.core.fsutil import rmtree

            extra = {k: v for k, v in env_b.items() if k not in os.environ or os.environ[k] != v}
            extra.pop("UV_CACHE_DIR", None)
            with contextlib.ExitStack() as pair:
                a_at, b_at = side(f"a{i}", pair), side(f"b{i}", pair)
                ea = clean_env(UV_CACHE_DIR=str(a_at / f"uvc-a{i}"))
                eb = clean_env(UV_CACHE_DIR=str(b_at / f"uvc-b{i}"), **extra)
                os.sync()
                a = step(f"sitestack build, cold (repeat {i})", build("1", a_at / f"site{i}", ea))
                os.sync()
                b = step(f"uv, cold (repeat {i})", uv_run(f"uv-cold{i}", eb, b_at))
                if not args.fresh_fs:
                    for d in (f"uvc-a{i}", f"uvc-b{i}", f"site{i}", f"uv-cold{i}"):
                        rmtree(work / d)
            return a, b

        print(f"load average at the start: {load()}", flush=True)
        cpu_mark = [cpu()]

        def step(what: str, secs: float) -> float:
            # CPU seconds too: on a loaded 2-core machine they move far less than wall time.
            used, cpu_mark[0] = cpu() - cpu_mark[0], cpu()
            print(f"  {what}: {secs:.1f} s, {used:.1f} CPU-s (load average {load()})", flush=True)
            return secs

        t_cold = step("sitestack build, cold", build("1"))
        t_uv_cold = step("uv, cold", uv_run("uv-cold"))
        if args.cold_repeat > 1:
            pairs = [(t_cold, t_uv_cold)] + [cold_pair(i) for i in range(1, args.cold_repeat)]
            t_cold, t_uv_cold = (statistics.median(p[i] for p in pairs) for i in (0, 1))
            ratios = [a / b for a, b in pairs]
            print(f"  cold pairs (sitestack/uv): {', '.join(f'{a:.1f}/{b:.1f}' for a, b in pairs)}; "
                  f"ratios {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}); "
                  f"medians {t_cold:.1f}/{t_uv_cold:.1f}", flush=True)
        t_warm = step("sitestack build, warm", build("2"))
        t_uv_warm = step("uv, warm", uv_run("uv-warm"))
        rec = json.loads((root / "stacks" / name / "2" / ".sitestack" / "stack.json").read_text())
        report(f"build of {name}: {len(rec['packages'])} distributions, {rec['files']} files, "
               f"{rec['bytes'] / 2**30:.2f} GiB",
               [("sitestack build, every cache cold", t_cold),
                ("uv venv + uv pip install --compile-bytecode, cold", t_uv_cold),
                ("sitestack build, warm (new dated version)", t_warm),
                ("uv venv + uv pip install --compile-bytecode, warm", t_uv_warm)],
               "uv venv + uv pip install --compile-bytecode, warm")
        print(f"  cold: {t_cold / t_uv_cold:.2f}x uv cold (goal <= 1.3x); "
              f"warm: {t_warm / t_uv_warm:.2f}x uv warm (goal <= 0.6x)")

        stack = root / "stacks" / name / "2"
        print(f"  (load average after the builds: {load()})")
        if args.spec:  # the full set: free the peer's ~14 GiB before cp -a and the archives
            from sitestack.core.fsutil import rmtree

            for d in ("uv-cold", "uv-warm", b_cache.name):
                rmtree(fs_b / d)
            # Freeing 14 GiB keeps the disk busy for a while after rmtree returns (the last
            # session's single clone run read 1.17x right after it, reruns 0.63-0.72x).
            print(f"  (the disk settled {settle():.0f} s after freeing the peer's venvs)", flush=True)
        if args.builds_only:
            _print_log(root / "stacks" / name / "1", "cold")
            _print_log(stack, "warm")
            return

        baseline = [str(Path(args.baseline_venv) / "bin" / "sitestack")] if args.baseline_venv else []
        base_runs: list[tuple[float, float]] = []  # (baseline, peer) pairs

        def clone_once() -> tuple[float, float]:
            for d in ("clone", "clone-base", "cp-al", "cp-a"):
                if (fs_a / d).exists():
                    shutil.rmtree(fs_a / d)
            os.sync()  # the removal's writes must not land inside the next timing
            a = timed([*sitestack, "clone", f"{name}/2", "--prefix", str(fs_a / "clone"),
                       "--mode", "hardlink", "--root", str(root)], env=env_a)
            if baseline:
                os.sync()
                c = timed([*baseline, "clone", f"{name}/2", "--prefix", str(fs_a / "clone-base"),
                           "--mode", "hardlink", "--root", str(root)], env=env_a)
            os.sync()
            b = timed(["cp", "-al", str(stack), str(fs_a / "cp-al")])
            if baseline:
                base_runs.append((c, b))
            return a, b

        runs = [clone_once() for _ in range(args.repeat)]
        t_clone, t_cpal = (statistics.median(r[i] for r in runs) for i in (0, 1))
        os.sync()
        t_cpa = timed(["cp", "-a", str(stack), str(fs_a / "cp-a")])
        rows = [("sitestack clone --mode hardlink", t_clone)]
        if base_runs:
            rows.append(("baseline sitestack clone --mode hardlink", statistics.median(r[0] for r in base_runs)))
        report(f"clone (median of {args.repeat}, alternating; load average {load()})",
               [*rows, ("cp -al", t_cpal), ("cp -a (one run)", t_cpa)], "cp -al")
        print(f"  clone: {t_clone / t_cpal:.2f}x cp -al (goal <= 1.0x); runs: "
              + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in runs) + f"; {_pair_ratios(runs)}")
        if base_runs:
            print(f"  baseline clone: {rows[1][1] / t_cpal:.2f}x cp -al; runs: "
                  + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in base_runs) + f"; {_pair_ratios(base_runs)}; "
                  f"this tree / baseline: {_pair_ratios([(a, c) for (a, _), (c, _) in zip(runs, base_runs, strict=True)])}")
            base_runs.clear()
        for d in ("cp-a", "cp-al", "clone-base"):
            if (fs_a / d).exists():
                shutil.rmtree(fs_a / d)

        def pack_once() -> tuple[float, float]:
            a = timed([*sitestack, "pack", f"{name}/2", "-o", str(work / "s.tar.zst"),
                       "--level", str(args.level), "--root", str(root)], env=env_a)
            if baseline:
                c = timed([*baseline, "pack", f"{name}/2", "-o", str(work / "s-base.tar.zst"),
                           "--level", str(args.level), "--root", str(root)], env=env_a)
            b = timed(f"tar -cf - -C {stack} . | zstd -q -f -{args.level} -T0 -o {work / 't.tar.zst'}",
                      shell=True)
            if baseline:
                base_runs.append((c, b))
            return a, b

        pruns = [pack_once() for _ in range(args.repeat)]
        t_pack, t_tar = (statistics.median(r[i] for r in pruns) for i in (0, 1))
        sizes = {n: (work / n).stat().st_size / 2**20 for n in ("s.tar.zst", "t.tar.zst")}
        report(f"pack (zstd level {args.level}; sitestack {sizes['s.tar.zst']:.0f} MiB, "
               f"tar|zstd {sizes['t.tar.zst']:.0f} MiB; median of {args.repeat}, alternating; "
               f"load average {load()})",
               [("sitestack pack -o X.tar.zst", t_pack), (f"tar -cf - . | zstd -{args.level} -T0", t_tar)],
               f"tar -cf - . | zstd -{args.level} -T0")
        print(f"  pack: {t_pack / t_tar:.2f}x tar|zstd (goal <= 1.0x); runs: "
              + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in pruns) + f"; {_pair_ratios(pruns)}")
        if base_runs:
            t_base = statistics.median(r[0] for r in base_runs)
            print(f"  baseline pack: {t_base:.3f} s, {t_base / t_tar:.2f}x tar|zstd; runs: "
                  + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in base_runs) + f"; {_pair_ratios(base_runs)}; "
                  f"this tree / baseline: {_pair_ratios([(a, c) for (a, _), (c, _) in zip(pruns, base_runs, strict=True)])}")
        _print_log(root / "stacks" / name / "1", "cold")
        _print_log(stack, "warm")
    finally:
        mounts.close()
        if not args.work:
            from sitestack.core.fsutil import rmtree

            rmtree(work)


@contextlib.contextmanager
def fresh_fs(mount: Path, size: str) -> Iterator[Path]:
    """A new ext4 filesystem at `mount`: a sparse image beside it on a loop device with
    direct I/O (the image's pages would otherwise sit in the page cache twice), inode
    tables written by mkfs (lazy init would write them in the background during a run);
    unmounted, and the image deleted, at the end."""
    if os.geteuid() != 0:
        sys.exit("--fresh-fs needs root (losetup, mount)")
    img = mount.with_name(mount.name + ".img")
    subprocess.run(["truncate", "-s", size, str(img)], check=True)
    dev = ""
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(img)],
                       check=True)
        dev = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", str(img)], check=True,
                             capture_output=True, text=True).stdout.strip()
        mount.mkdir(exist_ok=True)
        subprocess.run(["mount", dev, str(mount)], check=True)
        try:
            yield mount
        finally:
            os.sync()
            subprocess.run(["umount", str(mount)], check=True)
            mount.rmdir()
    finally:
        if dev:
            subprocess.run(["losetup", "-d", dev], check=False)
        img.unlink()


def _pair_ratios(runs: list[tuple[float, float]]) -> str:
    """Each alternating pair's ratio and their median: a pair shares the disk's state of the
    moment, which moves single runs by 2x on this machine (the headline stays the ratio of
    the two sides' medians)."""
    ratios = [a / b for a, b in runs]
    return f"pair ratios {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"


def settle(quiet_s: int = 3, most_s: int = 180) -> float:
    """sync, then wait until the disks have been idle (under 5% busy) for `quiet_s` seconds
    in a row; returns the seconds waited."""
    import time

    def busy_ms() -> int:  # field 13 of /proc/diskstats: ms spent doing I/O, whole disks
        with open("/proc/diskstats") as f:
            return sum(int(x[12]) for x in (ln.split() for ln in f) if len(x) > 12 and not x[2][-1].isdigit())

    t0 = time.monotonic()
    os.sync()
    quiet, last = 0, busy_ms()
    while quiet < quiet_s and time.monotonic() - t0 < most_s:
        time.sleep(1)
        now = busy_ms()
        quiet = quiet + 1 if now - last < 50 else 0
        last = now
    return time.monotonic() - t0


def _req_name(req: str) -> str:
    """A requirement's normalised project name ("horovod==0.28.1" -> "horovod")."""
    return re.split(r"[\s\[<>=!~;@]", req, maxsplit=1)[0].lower().replace("_", "-")


def _print_log(stack: Path, what: str) -> None:
    log = (stack / ".sitestack" / "build.log").read_text()
    print(f"\n{what} build's steps (build.log):")
    for line in log.splitlines():
        if line.startswith("[") and "s] " in line[:12]:
            print("  " + line)


if __name__ == "__main__":
    main()
