"""Benchmark (network): a real stack from PyPI, each sitestack step timed beside its peer.

    python bench/realstack.py                                       # the small set: numpy scipy pandas matplotlib
    python bench/realstack.py --spec examples/polaris-pypi.toml     # the 8 GiB ML stack, no source build uv redoes
    python bench/realstack.py --spec examples/polaris.toml          # the same with horovod from source

In one run, on one machine, caches as stated:
  - build, every cache cold (empty uv cache, new site root) vs `uv venv` + `uv pip install
    --compile-bytecode` with an empty uv cache of its own;
  - build, caches warm (a new dated version of the same set) vs the same uv run, uv cache warm;
  - `sitestack clone --mode hardlink` vs `cp -al` (and `cp -a` for scale);
  - `sitestack pack -o X.tar.zst --level 3` vs `tar -cf - . | zstd -3 -T0`.

Goals (issue 10): cold <= 1.3x, warm <= 0.6x, clone <= 1.0x `cp -al`, pack <= 1.0x tar|zstd.
Clone and pack run --repeat times, each side alternately, and report medians (single runs of
half a second move by +-50% on a shared machine); the load average is printed with each step.
`--cold-repeat N` and `--warm-repeat N` run N pairs of those builds (sitestack, then uv; cold
ones each with new caches) and compare their medians; `--builds-only` stops after the builds.

Like for like: uv's warm run is read for the packages it built from source again ("Built
NAME==VERSION": horovod, built without build isolation, is built on every run; mpi4py's build
is cached). Where there are any, the warm pairs run a second time with those packages, and
the tests that import them, left out of both sides (a spec written into the work folder,
like-for-like.toml), and that figure is the like-for-like one: with them, the warm ratio
measures uv's compiler.

pack hashes only the files whose inode and ctime (or mtime, where only a link count moved)
changed since a pack last found them to match (core/checked.py). The stack is packed once
before the clones (each side once: the first pack of a stack hashes every file, reported on
its own line), and the timed runs follow the clones and the removal of `cp -al`'s copy, as a
site's next pack follows its users' clones; each run prints how many files it had to hash.

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
to the clone and pack rounds, between the two sides, on the stack this one built (a baseline
that keeps pack's state in another format makes each side's pack find the other's state and
hash every file: compare packs only with a baseline of the same core/checked.py format).
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
    ap.add_argument("--warm-repeat", type=int, default=1,
                    help="warm builds of each side, alternating (median); the like-for-like pairs too")
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
        else:
            spec = work / "spec.toml"
            spec.write_text(f'[stack]\nname = "real"\npython = "{py}"\n[packages]\nrequirements = '
                            + json.dumps(args.requirements) + '\n[tests]\nimports = ["numpy"]\n')
        from sitestack.site.spec import load_spec

        s = load_spec(spec)
        name, reqs, build_opts = s.name, list(s.packages.requirements), s.packages.build
        fs_a, fs_b = side("sitestack"), side("uv")
        root = fs_a / "site"
        a_cache, b_cache = fs_a / "uvcache-sitestack", fs_b / "uvcache-uv"
        env_a, env_b = clean_env(UV_CACHE_DIR=str(a_cache)), clean_env(UV_CACHE_DIR=str(b_cache))
        # The same environment variables the spec gives its source builds (e.g. MPICC).
        for o in build_opts.values():
            env_b.update(o.env)

        def build(version: str, at: Path = root, env: dict[str, str] = env_a, spec: Path = spec) -> float:
            return timed([*sitestack, "build", str(spec), "--root", str(at), "--version", version],
                         env=env)

        def uv_run(dest: str, env: dict[str, str] = env_b, base: Path = fs_b, reqs: list[str] = reqs,
                   built: set[str] | None = None) -> float:
            """uv's venv and install; with `built`, not quiet, and the names of the packages it
            built from source (its "Built NAME==VERSION" lines) are added to it."""
            venv = base / dest
            opts = {n: o for n, o in build_opts.items() if any(_req_name(r) == n for r in reqs)}
            no_binary = [x for n, o in sorted(opts.items()) if o.no_binary for x in ("--no-binary", n)]
            install = (f"{uv} pip install {'-q ' if built is None else ''}--compile-bytecode "
                       f"--python {venv / 'bin' / 'python'} {' '.join(no_binary)} ")
            # What uv itself needs for a package built without isolation (horovod imports torch
            # in its build): a second call, once the first has installed what that build imports.
            later = {n for n, o in opts.items() if not o.build_isolation}
            first = [r for r in reqs if _req_name(r) not in later]
            second = [r for r in reqs if _req_name(r) in later]
            cmd = f"{uv} venv -q {venv} --python {py} && {install}" + " ".join(f"'{r}'" for r in first)
            if second:
                cmd += (f" && {install}" + " ".join(f"--no-build-isolation-package {n}" for n in sorted(later))
                        + " " + " ".join(f"'{r}'" for r in second))
            out: list[str] = []
            took = timed(cmd, env=env, shell=True, output=out)
            if built is not None:
                built.update(_req_name(m) for m in re.findall(r"^\s*Built (\S+)==", "".join(out), re.M))
            return took

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

        def warm_pairs(what: str, versions: list[str], spec: Path, reqs: list[str],
                       built: set[str]) -> list[tuple[float, float]]:
            """Warm builds of each side, alternating; each uv venv is removed after its pair."""
            from sitestack.core.fsutil import rmtree

            pairs = []
            for i, v in enumerate(versions):
                os.sync()
                a = step(f"sitestack build, warm{what} ({v})", build(v, spec=spec))
                os.sync()
                b = step(f"uv, warm{what} ({i + 1})", uv_run(f"uv-warm-{v}", reqs=reqs, built=built))
                rmtree(fs_b / f"uv-warm-{v}")
                pairs.append((a, b))
            return pairs

        print(f"load average at the start: {load()}; uptime: {_uptime()}", flush=True)
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
            print(f"  cold pairs (sitestack/uv): {_pairs(pairs)}; medians {t_cold:.1f}/{t_uv_cold:.1f}", flush=True)
        built: set[str] = set()
        warm = warm_pairs("", ["2"] + [f"2.{i}" for i in range(1, args.warm_repeat)], spec, reqs, built)
        t_warm, t_uv_warm = (statistics.median(p[i] for p in warm) for i in (0, 1))
        if len(warm) > 1:
            print(f"  warm pairs (sitestack/uv): {_pairs(warm)}; medians {t_warm:.1f}/{t_uv_warm:.1f}", flush=True)
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
        if not built:
            print("  like for like: uv built nothing from source on its warm run(s); the warm figure is the one")
        else:
            lfl = work / "like-for-like.toml"
            dropped = _without(spec, lfl, built, stack)
            print(f"  uv built {', '.join(sorted(built))} from source again on its warm run(s) (sitestack "
                  f"links its cached build): the warm figure above times that build. Like for like, with "
                  f"{', '.join(sorted(built))} left out of both sides ({lfl}; tests dropped: "
                  f"{'; '.join(dropped) or 'none'}):", flush=True)
            lfl_reqs = list(load_spec(lfl).packages.requirements)
            again: set[str] = set()
            pairs = warm_pairs(", like for like", [f"lfl{i}" for i in range(1, args.warm_repeat + 1)], lfl,
                               lfl_reqs, again)
            a, b = (statistics.median(p[i] for p in pairs) for i in (0, 1))
            print(f"  warm pairs, like for like (sitestack/uv): {_pairs(pairs)}; medians {a:.1f}/{b:.1f}")
            print(f"  warm, like for like: {a / b:.2f}x uv warm (goal <= 0.6x)"
                  + (f"; uv still built {', '.join(sorted(again))}" if again else ""))
        print(f"  (load average after the builds: {load()}; uptime: {_uptime()})")
        if args.spec:  # the full set: free the peer's ~14 GiB before cp -a and the archives
            from sitestack.core.fsutil import rmtree

            for d in ("uv-cold", b_cache.name):
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

        def pack_once() -> tuple[float, float]:
            todo, files = _to_hash(root, name, "2")
            a = timed([*sitestack, "pack", f"{name}/2", "-o", str(work / "s.tar.zst"),
                       "--level", str(args.level), "--root", str(root)], env=env_a)
            if baseline:
                c = timed([*baseline, "pack", f"{name}/2", "-o", str(work / "s-base.tar.zst"),
                           "--level", str(args.level), "--root", str(root)], env=env_a)
            b = timed(f"tar -cf - -C {stack} . | zstd -q -f -{args.level} -T0 -o {work / 't.tar.zst'}",
                      shell=True)
            if baseline:
                base_runs.append((c, b))
            hashes.append(f"{todo}/{files}")
            return a, b

        hashes: list[str] = []
        first = pack_once()
        base_runs.clear()
        print(f"\nfirst pack of the stack (nothing checked yet: every file hashed): sitestack {first[0]:.2f} s, "
              f"tar|zstd {first[1]:.2f} s: {first[0] / first[1]:.2f}x (load average {load()}; uptime: {_uptime()})")

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

        hashes.clear()
        pruns = [pack_once() for _ in range(args.repeat)]
        t_pack, t_tar = (statistics.median(r[i] for r in pruns) for i in (0, 1))
        sizes = {n: (work / n).stat().st_size / 2**20 for n in ("s.tar.zst", "t.tar.zst")}
        report(f"pack after the clones (zstd level {args.level}; sitestack {sizes['s.tar.zst']:.0f} MiB, "
               f"tar|zstd {sizes['t.tar.zst']:.0f} MiB; median of {args.repeat}, alternating; "
               f"load average {load()}; uptime: {_uptime()})",
               [("sitestack pack -o X.tar.zst", t_pack), (f"tar -cf - . | zstd -{args.level} -T0", t_tar)],
               f"tar -cf - . | zstd -{args.level} -T0")
        print(f"  pack: {t_pack / t_tar:.2f}x tar|zstd (goal <= 1.0x); runs: "
              + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in pruns) + f"; {_pair_ratios(pruns)}; "
              f"files to hash before each run: {', '.join(hashes)}")
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


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _pairs(pairs: list[tuple[float, float]]) -> str:
    ratios = [a / b for a, b in pairs]
    return (f"{', '.join(f'{a:.1f}/{b:.1f}' for a, b in pairs)}; ratios {', '.join(f'{r:.2f}' for r in ratios)} "
            f"(median {statistics.median(ratios):.2f})")


def _to_hash(root: Path, name: str, version: str) -> tuple[int, int]:
    """How many of the stack's files its next pack hashes (core.checked trusts the rest): read
    from the state, not from the pack, so the timed run is the tool as users run it."""
    import hashlib

    from sitestack.core.checked import Checked
    from sitestack.core.layout import SiteRoot
    from sitestack.core.manifest import Manifest

    prefix = root / "stacks" / name / version
    data = (prefix / ".sitestack" / "manifest.json").read_bytes()
    files = sorted(Manifest.parse(data, prefix / ".sitestack" / "manifest.json").files)
    c = Checked.load(SiteRoot(root).checked(name, version), hashlib.sha256(data).hexdigest(), len(files))
    return sum(1 for i, rel in enumerate(files) if not c.trusted(i, os.lstat(prefix / rel))), len(files)


def _without(spec: Path, out: Path, names: set[str], stack: Path) -> list[str]:
    """Write `spec` to `out` without the distributions `names`: their requirements, build
    options, and the tests that import their modules (top_level.txt in `stack`, else the
    name). Returns the tests dropped."""
    import tomllib

    doc = tomllib.loads(spec.read_text(encoding="utf-8"))
    mods = set(names) | {n.replace("-", "_") for n in names}
    for ti in stack.glob("lib/python*/site-packages/*.dist-info/top_level.txt"):
        if _req_name(ti.parent.name.split("-")[0]) in names:
            mods |= {ln.strip() for ln in ti.read_text().splitlines() if ln.strip()}
    pk = doc.setdefault("packages", {})
    pk["requirements"] = [r for r in pk.get("requirements", []) if _req_name(r) not in names]
    pk["build"] = {n: o for n, o in pk.get("build", {}).items() if _req_name(n) not in names}
    uses = re.compile(r"\b(?:import|from)\s+(?:[\w.]+\s*,\s*)*(" + "|".join(map(re.escape, sorted(mods))) + r")\b")
    dropped: list[str] = []
    for t in (doc.get("tests", {}), doc.get("tests", {}).get("gpu", {})):
        keep = [m for m in t.get("imports", []) if m.split(".")[0] not in mods]
        dropped += [f"import {m}" for m in t.get("imports", []) if m not in keep]
        if "imports" in t:
            t["imports"] = keep
        dropped += [c for c in t.get("commands", []) if uses.search(c)]
        if "commands" in t:
            t["commands"] = [c for c in t["commands"] if not uses.search(c)]
    out.write_text(_toml(doc), encoding="utf-8")
    return dropped


def _toml(doc: dict[str, object], where: str = "") -> str:
    """A spec's tables as TOML: strings, numbers, booleans, lists of those, sub-tables (JSON's
    strings and lists are TOML's)."""
    lines, tables = [], []
    for k, v in doc.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{json.dumps(k)} = {json.dumps(v)}")
    text = (f"[{where}]\n" if where and lines else "") + "".join(f"{ln}\n" for ln in lines)
    for k, v in tables:
        text += _toml(v, f"{where}.{json.dumps(k)}" if where else json.dumps(k))
    return text


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
