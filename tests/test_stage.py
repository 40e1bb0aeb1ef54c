"""sitestack stage / unstage: real Open MPI, real mpi4py, simulated nodes, real failures."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sitestack.core.records import StackRecord
from sitestack.scale.image import read_header
from tests.conftest import run_cli
from tests.helpers.archives import craft
from tests.helpers.env import offline_env as clean_env

NODE_MAP = "0:nodeA,1:nodeA,2:nodeB,3:nodeB"
NODE_OF = {0: "nodeA", 1: "nodeA", 2: "nodeB", 3: "nodeB"}
MPIEXEC = shutil.which("mpiexec")


def _have_mpi4py() -> bool:
    return subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True).returncode == 0


needs_mpi = pytest.mark.skipif(not (MPIEXEC and _have_mpi4py()), reason="needs mpiexec and mpi4py")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs mounts need root")


@dataclass(frozen=True)
class Rank:
    rank: int
    rc: int
    out: str
    err: str


def mpi_env(root: Path) -> dict[str, str]:
    return clean_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                     SITESTACK_STAGE_NODE_MAP=NODE_MAP, SITESTACK_ROOT=str(root),
                     OMPI_MCA_rmaps_base_oversubscribe="1")


def mpirun(script: str, tmp: Path, env: dict[str, str], *args: str) -> list[Rank]:
    """Run `sh -c script` on 4 ranks; every rank's exit code, stdout and stderr."""
    out = tmp / f"mpiout-{uuid.uuid4().hex[:8]}"
    wrapped = f'{script}\necho "rc=$?"'  # report, never fail: mpiexec would kill the others
    r = subprocess.run([str(MPIEXEC), "-n", "4", "--oversubscribe", "--output-filename", str(out),
                        "sh", "-c", wrapped, "sh", *args], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    ranks = []
    for i in range(4):
        d = out / "1" / f"rank.{i}"
        stdout = (d / "stdout").read_text() if (d / "stdout").exists() else ""
        stderr = (d / "stderr").read_text() if (d / "stderr").exists() else ""
        lines = stdout.rstrip("\n").splitlines()
        assert lines and lines[-1].startswith("rc="), (stdout, stderr)
        ranks.append(Rank(i, int(lines[-1][3:]), "\n".join(lines[:-1]), stderr))
    return ranks


STAGE = f'"{sys.executable}" -m sitestack stage "$@"'


def staged_items(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name != ".locks") if base.is_dir() else []


@pytest.fixture()
def scratch(workdir: Path) -> Iterator[Path]:
    from sitestack.core.fsutil import rmtree

    d = workdir / f"scratch-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    rmtree(d)


# --- local stage -----------------------------------------------------------------------------

def test_local_stage_without_mpi(stack: StackRecord, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("stage", stack.ref, "--to", str(scratch), "--no-mpi", "--json",
                "--root", str(site_root.path), env=clean_env(), check=True)
    res = json.loads(r.stdout)
    final = Path(res["path"])
    assert final.parent == scratch / "sitestack" and final.name.startswith("conda-2022-07-19-")
    assert res["status"] == "staged" and res["activate"] == str(final / "activate")
    assert (final / ".sitestack-stage" / "verified.json").is_file()
    assert not os.stat(final / "stack" / "bin").st_mode & 0o222  # read-only like the stack
    code = ("import sys, sysconfig, shadowme; print(sys.prefix); print(sysconfig.get_config_var('LIBDIR'));"
            "print(shadowme.__file__)")
    out = subprocess.run(["sh", "-c", f'. "{res["activate"]}" && python -c "{code}" && tinyapp'],
                         capture_output=True, text=True, env=clean_env()).stdout.splitlines()
    assert out[0] == str(final / "stack") and out[1] == str(final / "stack" / "lib")
    assert out[2].startswith(str(final / "stack") + "/") and out[3] == "tinyapp 1.0"
    # The relocated sysconfigdata was compiled again: its .pyc matches size and mtime.
    lib = final / "stack" / "lib" / f"python{stack.python_xy}"
    src = next(lib.glob("_sysconfigdata_*.py"))
    pyc = next((lib / "__pycache__").glob(src.stem + ".cpython-*.pyc")).read_bytes()
    _flags, mtime, size = struct.unpack("<III", pyc[4:16])
    assert (mtime, size) == (int(src.stat().st_mtime), src.stat().st_size)
    assert str(final / "stack").encode() in src.read_bytes()


def test_local_stage_layer_whose_path_prefixes_the_target(stack: StackRecord, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    """The old layer path "X/v" is a prefix of the new "X/vs/...": one-pass relocation only."""
    layer = scratch / "v"
    run_cli("venv", str(layer), "--stack", stack.ref, "--root", str(site_root.path),
            env=clean_env(), check=True)
    r = run_cli("stage", stack.ref, "--layer", str(layer), "--to", str(scratch / "vs"), "--no-mpi",
                "--json", "--root", str(site_root.path), env=clean_env(), check=True)
    final = Path(json.loads(r.stdout)["path"])
    cfg = (final / "layer" / "pyvenv.cfg").read_text()
    assert f"home = {final}/stack/bin\n" in cfg
    code = "import sys, pip; print(sys.prefix); print(sys.base_prefix); print(pip.__file__)"
    out = subprocess.run(["sh", "-c", f'. "{final}/activate" && python -c "{code}"'],
                         capture_output=True, text=True, env=clean_env())
    assert out.stdout.splitlines()[:2] == [str(final / "layer"), str(final / "stack")], out.stderr
    assert out.stdout.splitlines()[2].startswith(str(final / "stack") + "/")


@needs_root
def test_local_full_disk_is_refused_cleanly(stack: StackRecord, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    mnt = scratch / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], check=True)
    try:
        r = run_cli("stage", stack.ref, "--to", str(mnt), "--no-mpi", "--root", str(site_root.path),
                    env=clean_env())
        assert r.returncode == 5, r.stderr
        assert "disk full" in r.stderr and "node " in r.stderr and r.stderr.count("\n") <= 2
        assert staged_items(mnt / "sitestack") == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_unstage_removes_only_its_own(stack: StackRecord, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    res = json.loads(run_cli("stage", stack.ref, "--to", str(scratch), "--no-mpi", "--json",
                             "--root", str(site_root.path), env=clean_env(), check=True).stdout)
    (scratch / "keep.txt").write_text("user data\n")
    (scratch / "sitestack" / "foreign").mkdir()
    r = run_cli("unstage", "--to", str(scratch), "--json", check=True)
    out = json.loads(r.stdout)
    assert sorted(out["removed"]) == sorted([res["path"], str(scratch / "sitestack" / ".locks")])
    assert out["kept"] == [str(scratch / "sitestack" / "foreign")]
    assert not os.path.exists(res["path"]) and (scratch / "keep.txt").is_file()
    (scratch / "sitestack" / "foreign").rmdir()
    run_cli("unstage", "--to", str(scratch), check=True)
    assert sorted(os.listdir(scratch)) == ["keep.txt"]


# --- MPI: 4 ranks, 2 simulated nodes ---------------------------------------------------------

@needs_mpi
def test_mpi_stage_layer_then_idempotent(stack: StackRecord, packed_layer: Path, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    env = mpi_env(site_root.path)
    to = str(scratch / "{node}")
    ranks = mpirun(STAGE, scratch, env, stack.ref, "--layer", str(packed_layer), "--to", to, "--json",
                   "--chunk-size", "1000000")
    assert [r.rc for r in ranks] == [0, 0, 0, 0], [r.err for r in ranks]
    res = [json.loads(r.out) for r in ranks]
    finals = {r.rank: Path(x["path"]) for r, x in zip(ranks, res, strict=True)}
    for rank, final in finals.items():
        assert final.parent == scratch / NODE_OF[rank] / "sitestack"
        assert res[rank]["node"] == NODE_OF[rank] and res[rank]["status"] == "staged"
        assert res[rank]["activate"] == str(final / "activate")
    assert finals[0] == finals[1] and finals[2] == finals[3] and finals[0].name == finals[2].name
    assert {(n["node"], n["status"]) for n in res[3]["nodes"]} == {("nodeA", "staged"), ("nodeB", "staged")}
    cfg = (finals[2] / "layer" / "pyvenv.cfg").read_text()
    assert f"home = {finals[2]}/stack/bin" in cfg and str(stack.prefix) not in cfg
    assert os.readlink(finals[2] / "layer" / "bin" / f"python{stack.python_xy}").startswith(str(finals[2]))
    assert (finals[2] / "layer" / "bin" / "pip").read_text().startswith(f"#!{finals[2]}/layer/bin/python")

    # Every rank imports the layer's and the stack's packages from its node's copy only.
    probe = ('import json, sys, layerpkg, shadowme; print(json.dumps([sys.prefix, sys.base_prefix, '
             'layerpkg.__file__, shadowme.__file__, sys.flags.no_user_site]))')
    script = ('case "$OMPI_COMM_WORLD_RANK" in 0|1) n=nodeA;; *) n=nodeB;; esac\n'
              f'. "{scratch}/$n/sitestack/{finals[0].name}/activate" && python -c "$1"')
    for r in mpirun(script, scratch, env, probe):
        assert r.rc == 0, r.err
        prefix, base, lp, sm, nousersite = json.loads(r.out)
        final = finals[r.rank]
        assert (prefix, base) == (str(final / "layer"), str(final / "stack"))
        assert lp.startswith(str(final / "layer") + "/") and sm.startswith(str(final / "stack") + "/")
        assert nousersite == 1

    # A second stage reuses each node's verified copy: nothing is rewritten.
    before = {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns,
                  os.stat(f / ".sitestack-stage" / "verified.json").st_mtime_ns) for f in set(finals.values())}
    ranks = mpirun(STAGE, scratch, env, stack.ref, "--layer", str(packed_layer), "--to", to, "--json")
    assert [r.rc for r in ranks] == [0, 0, 0, 0], [r.err for r in ranks]
    for r in ranks:
        x = json.loads(r.out)
        assert x["status"] == "reused" and {n["status"] for n in x["nodes"]} == {"reused"}
        assert x["path"] == str(finals[r.rank])
    after = {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns,
                 os.stat(f / ".sitestack-stage" / "verified.json").st_mtime_ns) for f in set(finals.values())}
    assert after == before


@needs_mpi
def test_mpi_corrupted_chunk_fails_on_every_rank(stack_archive: Path, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    bad = scratch / "bad.tar.zst"
    data = bytearray(stack_archive.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    bad.write_bytes(bytes(data))
    ranks = mpirun(STAGE, scratch, mpi_env(site_root.path), "--archive", str(bad), "--to",
                   str(scratch / "{node}"), "--chunk-size", "1000000")
    for r in ranks:
        assert r.rc == 6, r.err
        assert "sitestack: error: staging failed on 2 of 2 node(s)" in r.err
        assert "node nodeA" in r.err and "node nodeB" in r.err and "corrupt" in r.err
    for node in ("nodeA", "nodeB"):
        assert staged_items(scratch / node / "sitestack") == []  # no final path, no temp folder


@needs_mpi
def test_mpi_dotdot_tar_refused(site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import tarfile

    ti = tarfile.TarInfo("stack/../../../escaped")
    ti.size = 1
    evil = craft(scratch / "evil.tar.zst", [(ti, b"x")],
                 {"files": {"../../../escaped": [hashlib.sha256(b"x").hexdigest(), 1, 0o644]},
                  "symlinks": {}, "dirs": []})
    ranks = mpirun(STAGE, scratch, mpi_env(site_root.path), "--archive", str(evil), "--to",
                   str(scratch / "{node}"))
    for r in ranks:
        assert r.rc == 6 and "unsafe archive: path with '..'" in r.err, r.err
    assert not list(scratch.rglob("escaped"))
    for node in ("nodeA", "nodeB"):
        assert staged_items(scratch / node / "sitestack") == []


@needs_mpi
@needs_root
def test_mpi_full_disk_on_one_node(stack: StackRecord, stack_archive: Path, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    _fmt, header = read_header(stack_archive)
    mnt = scratch / "nodeB"
    mnt.mkdir()
    # Room for the bytes (so the free-space pre-check passes) but inodes for only half of
    # the files: the copy runs into ENOSPC for real, part way through. (Blocks alone no
    # longer run out: the pip copy's hard links take none.)
    size = header.bytes + (1 << 20)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={header.files // 2}", "tmpfs",
                    str(mnt)], check=True)
    try:
        ranks = mpirun(STAGE, scratch, mpi_env(site_root.path), "--archive", str(stack_archive),
                       "--to", str(scratch / "{node}"), "--chunk-size", "4000000")
        for r in ranks:
            assert r.rc == 5, r.err
            assert "staging failed on 1 of 2 node(s): node nodeB" in r.err and "disk full" in r.err
            assert "node nodeA" not in r.err
            assert "No space left on device" in r.err  # the real ENOSPC, not the pre-check
        assert staged_items(mnt / "sitestack") == []  # nothing half-done on the full node
        assert staged_items(scratch / "nodeA" / "sitestack") == [header.dirname]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@needs_mpi
def test_mpi_bad_target_same_error_everywhere(site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    ranks = mpirun(STAGE, scratch, mpi_env(site_root.path), "nosuchstack", "--to", str(scratch))
    for r in ranks:
        assert r.rc == 2 and "no stack named 'nosuchstack'" in r.err, r.err
    assert not (scratch / "sitestack").exists()


@pytest.mark.skipif(not shutil.which("mksquashfs"), reason="squashfs-tools missing")
def test_stage_extracts_a_squashfs_image_without_mount(stack: StackRecord, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    """Without --mount, an image is extracted (unsquashfs) at the path it was made for."""
    sqfs = scratch / "stack.sqfs"
    to = scratch / "local"
    run_cli("pack", stack.ref, "-o", str(sqfs), "--to", str(to), "--root", str(site_root.path), check=True)
    r = run_cli("stage", "--archive", str(sqfs), "--to", str(scratch / "other"), "--no-mpi", env=clean_env())
    assert r.returncode == 2 and f"stage it with --to {to}" in r.stderr, r.stderr
    res = json.loads(run_cli("stage", "--archive", str(sqfs), "--to", str(to), "--no-mpi", "--json",
                             env=clean_env(), check=True).stdout)
    final = Path(res["path"])
    assert res["how"] == "extracted" and not os.path.ismount(final)
    assert staged_items(to / "sitestack") == [final.name]  # the image itself is not kept
    out = subprocess.run([str(final / "stack" / "bin" / "python3"), "-c",
                          "import sys, shadowme; print(sys.prefix, shadowme.__file__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(final / "stack") and out[1].startswith(out[0] + "/")


def test_stage_reads_the_published_archive(stack: StackRecord, build_stack, site_root, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    published = site_root.archive(stack.name, stack.version)
    try:
        run_cli("pack", stack.ref, "--publish", "--root", str(site_root.path), check=True)
        assert published.is_file()
        for to, local in ((scratch / "local", True), (scratch / "{node}", False)):
            if local:
                r = run_cli("stage", stack.ref, "--to", str(to), "--no-mpi", "--json", "--root", str(site_root.path),
                            env=clean_env())
                assert r.returncode == 0, r.stderr
                assert f"reading the published archive {published}" in r.stderr
                final = Path(json.loads(r.stdout)["path"])
            else:
                ranks = mpirun(STAGE, scratch, mpi_env(site_root.path), stack.ref, "--to", str(to), "--json")
                assert [x.rc for x in ranks] == [0, 0, 0, 0], [x.err for x in ranks]
                assert f"reading the published archive {published}" in ranks[0].err
                assert all("published archive" not in x.err for x in ranks[1:]), "only rank 0 reads"
                final = Path(json.loads(ranks[3].out)["path"])
            out = subprocess.run([str(final / "stack" / "bin" / "python3"), "-c", "import sys, shadowme; print(sys.prefix)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            assert out == str(final / "stack")
        # An archive that does not hold this stack as built is ignored, never trusted.
        other = build_stack("conda", "2021-01-01", ["shadowme==2.0", "tinyapp"])
        run_cli("pack", other.ref, "-o", str(published), "--root", str(site_root.path), check=True)
        r = run_cli("stage", stack.ref, "--to", str(scratch / "again"), "--no-mpi", "--json",
                    "--root", str(site_root.path), env=clean_env())
        assert r.returncode == 0 and f"ignoring {published}" in r.stderr, r.stderr
        final = Path(json.loads(r.stdout)["path"])
        assert (final / "stack" / "lib" / f"python{stack.python_xy}" / "site-packages" / "shadowme-1.0.dist-info").is_dir()
    finally:
        published.unlink(missing_ok=True)


PUMP = r"""
import json, sys, time
from mpi4py import MPI
from sitestack.scale.mpibcast import DEPTH, iter_source, pump

comm = MPI.COMM_WORLD
chunk, n = 1 << 20, DEPTH - 1
got = []

def consume(chunks):
    for i, c in enumerate(chunks):
        if comm.rank == 1 and i == 0:
            time.sleep(2)  # a node whose disk stalls on the first chunk
        got.append((bytes(c[:1]), len(c)))
    return time.monotonic()

source = iter_source(iter([bytes([65 + i]) * chunk for i in range(n)])) if comm.rank == 0 else None
done = pump(MPI, comm, source, chunk, consume if comm.rank else None)
print(json.dumps({"rank": comm.rank, "returned": time.monotonic(), "consumed": done, "got": [[g[0].decode(), g[1]] for g in got]}))
"""


@needs_mpi
def test_mpi_broadcast_runs_ahead_of_a_slow_node(scratch: Path) -> None:
    """The broadcast does not wait for a node's consumer: rank 0 has sent every chunk (fewer
    than DEPTH) while rank 1 still sleeps on the first one, which it then gets intact, in order."""
    script = scratch / "pump.py"
    script.write_text(PUMP)
    r = subprocess.run([str(MPIEXEC), "-n", "2", "--oversubscribe", sys.executable, str(script)],
                       capture_output=True, text=True, env=clean_env(OMPI_ALLOW_RUN_AS_ROOT="1",
                                                                     OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"),
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = {d["rank"]: d for d in map(json.loads, r.stdout.splitlines())}
    from sitestack.scale.mpibcast import DEPTH

    assert out[1]["got"] == [[chr(65 + i), 1 << 20] for i in range(DEPTH - 1)]
    assert out[0]["returned"] < out[1]["consumed"] - 1.5  # rank 0 was done before rank 1 woke up
